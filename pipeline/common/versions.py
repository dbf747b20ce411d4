"""How the API spells a version (a transaction id, ``_xact_id``): in decimal, or as the SDKs
print one, 16 hex digits (``braintrust.xact_ids.prettify_xact``): the id times a constant,
modulo 2**64. Every version btpipe sends or compares goes through here."""

from __future__ import annotations

from typing import Final

_MOD: Final = 2**64
_PRETTY: Final = 205891132094649
#: ``_PRETTY``'s inverse modulo 2**64: reads a printed version back.
_PRETTY_INVERSE: Final = 1522336535492693385


def pretty_version(xact_id: str) -> str:
    """A version as the SDKs name it to the API."""
    return format(int(xact_id) * _PRETTY % _MOD, "016x")


def version_id(version: str) -> str:
    """The transaction id a version names, in either spelling the API takes."""
    if len(version) == 16:
        try:
            return str(int(version, 16) * _PRETTY_INVERSE % _MOD)
        except ValueError:
            pass
    return version
