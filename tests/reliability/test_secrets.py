"""A full export, import, migrate and verify with distinctive API keys: no output file, log,
manifest, state file or console line holds a key, nor does an interrupted run's state."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from pipeline.emulator.auth import KeySpec
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.reliability.support import cli_env, command, record, run_cli, seed_logs

KEY = "btsecret-Zq81xK-source-DISTINCT"
OTHER_KEY = "btsecret-Wm27pL-dest-DISTINCT"
KEYS = (KeySpec(KEY, "owner@src.test", "src"), KeySpec(OTHER_KEY, "owner@dst.test", "dst"))
SECRETS = (KEY.encode(), OTHER_KEY.encode(), b"Zq81xK", b"Wm27pL")


def test_no_key_in_any_file_or_console_line(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    console: list[str] = []
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "emulator.db"), keys=KEYS)) as server:
        project = seed_logs(server, KEY, 3000)
        env = cli_env(server.url, KEY, DEST_KEY=OTHER_KEY)
        out, state = work / "out", work / "state"
        runs = [
            ("export", "--project", project["name"], "--out", str(out), "--json"),
            ("export", "--project", project["name"], "--out", str(out / "jsonl"), "--format", "jsonl",
             "--incremental"),
            ("import", "--in", str(out), "--to-project", "restored", "--create-project", "--state-dir",
             str(state), "--json"),
            ("migrate", "--from-project", project["name"], "--to-project", "moved", "--create-project",
             "--to-api-key-env", "DEST_KEY", "--state-dir", str(state), "--json"),
            ("verify", "--in", str(out), "--to-project", "restored"),
            ("export", "--project", project["name"], "--out", str(work / "denied"), "--api-key", KEY + "-wrong"),
            ("import", "--in", str(out), "--to-project", "restored", "--state-dir", str(state),
             "--api-key", "x" + KEY),
        ]  # fmt: skip
        codes = []
        for args in runs:
            done = run_cli(env, *args)
            codes.append(done.returncode)
            console += [done.stdout, done.stderr]
        assert codes == [0, 0, 0, 0, 0, 3, 3], console
        interrupted = subprocess.Popen(
            command("migrate", "--from-project", project["name"], "--to-project", "again", "--create-project",
                    "--to-api-key-env", "DEST_KEY", "--state-dir", str(work / "killed"), "--batch-rows", "50"),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.5)
        interrupted.send_signal(signal.SIGKILL)
        console += list(interrupted.communicate())

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret not in data, f"{path.relative_to(tmp_path)} holds a key"
    text = "\n".join(console)
    for secret in SECRETS:
        assert secret.decode() not in text, "a key reached the console"
    record("files and console streams scanned for keys", len(files) + len(console))
