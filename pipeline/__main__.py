"""``python -m pipeline`` and the ``btpipe`` script run the btpipe command line."""

import sys

from pipeline.common.errors import EXIT_INTERRUPTED


def run() -> None:
    """The command line, loaded here so that a Ctrl-C while it loads is one line and exit 5
    like any other interrupt, not a traceback."""
    try:
        from pipeline.cli import program
    except KeyboardInterrupt:
        sys.stderr.write("btpipe: interrupted before it began; nothing was done\n")
        sys.exit(EXIT_INTERRUPTED)
    program()


if __name__ == "__main__":  # worker processes import this module too and must not run the CLI
    run()
