"""The ``emulator`` click command: run a local Braintrust-compatible server."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import click

from pipeline.common.errors import BtpipeError, UsageError
from pipeline.emulator.app import DEFAULT_MAX_REQUEST_BYTES
from pipeline.emulator.auth import DEFAULT_KEYS, KeySpec, load_keys_file, parse_key_list, parse_key_spec
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.profiles import PROFILES
from pipeline.emulator.server import ServerConfig, serve

KEYS_ENV = "BTPIPE_EMULATOR_KEYS"


def gather_keys(flags: tuple[str, ...], keys_file: Path | None) -> list[KeySpec]:
    """Keys from flags, the environment and a TOML file; the defaults when none is given."""
    specs: list[KeySpec] = []
    sources: list[tuple[str, Callable[[], list[KeySpec]]]] = [
        ("--key", lambda: [parse_key_spec(f) for f in flags]),
        (f"${KEYS_ENV}", lambda: parse_key_list(os.environ.get(KEYS_ENV, ""))),
    ]
    if keys_file is not None:
        sources.append((f"--keys-file {keys_file}", lambda: load_keys_file(keys_file)))
    for where, read in sources:
        try:
            specs += read()
        except ValueError as exc:  # each source named: a bad variable or file is found at once
            raise click.BadParameter(f"{where}: {exc}") from None
    return specs or list(DEFAULT_KEYS)


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 picks a free one."
)
@click.option("--db", default=":memory:", show_default=True, help="SQLite file, or :memory:.")
@click.option("--sample", "sample", default=0, type=int, help="Load N sample traces into sample-project.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sample data.")
@click.option("--max-request-bytes", default=DEFAULT_MAX_REQUEST_BYTES, show_default=True, type=int,
              help="Larger request bodies get 413.")  # fmt: skip
@click.option("--latency-ms", default=0.0, show_default=True, type=float,
              help="Delay added to every request, to imitate a remote service.")  # fmt: skip
@click.option("--faults", "faults", default="", metavar="SPEC",
              help="Fault injection, e.g. rate=0.2,kinds=429:503:drop,seed=7 (off by default; change at "
                   "run time with PUT /_emulator/faults and an admin key).")  # fmt: skip
@click.option("--key", "keys", multiple=True, metavar="KEY=EMAIL@ORG:ROLE",
              help=f"An API key (repeatable; also ${KEYS_ENV}, comma separated).")  # fmt: skip
@click.option("--keys-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file with [[keys]] entries (key, email, org, role, admin).")  # fmt: skip
@click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True,
              help="conservative: /btql answers 400 to what no official client sends (aggregates over "
                   "_xact_id, comparisons on _xact_id, aggregates at a pinned version).")  # fmt: skip
@click.option("--query-timeout-rows", type=click.IntRange(min=0), default=None, metavar="N",
              help="/btql answers 504 to a query whose scan would read more than N rows, as a busy "
                   "deployment times out (off by default).")  # fmt: skip
def emulator(
    host: str, port: int, db: str, sample: int, seed: int, max_request_bytes: int, latency_ms: float,
    faults: str, keys: tuple[str, ...], keys_file: Path | None, profile: str, query_timeout_rows: int | None,
) -> None:  # fmt: skip
    """Run a local server that behaves like the Braintrust API (REST objects, inserts, /btql).

    Without keys, bt-local-key (owner), bt-local-member-key (member) and bt-admin-key work
    in org "local", and bt-other-org-key in org "other".
    """
    try:
        fault_config = FaultConfig.parse(faults) if faults else FaultConfig()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    fault_config = dataclasses.replace(fault_config, latency_ms=latency_ms or fault_config.latency_ms)
    config = ServerConfig(
        host=host, port=port, db=db, keys=gather_keys(keys, keys_file), max_request_bytes=max_request_bytes,
        faults=fault_config, sample_traces=sample, seed=seed, profile=profile,
        query_timeout_rows=query_timeout_rows,
    )  # fmt: skip
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    except sqlite3.Error as exc:  # a directory, a missing directory, a file that is no database
        raise UsageError(f"--db {db}: cannot be opened as a SQLite database ({exc})") from None
    except OSError as exc:  # the port is taken, the host is no address of this machine
        raise BtpipeError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})"
        ) from None
