"""btpipe: bulk export/import for the Braintrust REST API, with a compatible local emulator."""

__version__ = "0.1.0"
