"""``python -m pipeline.emulator``: the same as ``btpipe emulator``."""

from pipeline.emulator.command import emulator

if __name__ == "__main__":
    emulator(prog_name="python -m pipeline.emulator")
