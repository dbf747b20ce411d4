"""``python -m pipeline`` runs the btpipe command line."""

from pipeline.cli import main

main()
