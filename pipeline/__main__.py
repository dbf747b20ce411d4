"""``python -m pipeline`` runs the btpipe command line."""

from pipeline.cli import program

if __name__ == "__main__":  # worker processes import this module too and must not run the CLI
    program()
