"""The ``--objects`` and ``--to-object`` syntax: the one place that knows it.

``logs`` (or ``project_logs``), ``datasets``, ``experiments`` select every object of a kind;
``dataset:NAME`` and ``experiment:NAME`` select one. ``--objects`` takes a comma list of these;
``--to-object`` takes exactly one object (``logs``, ``dataset:NAME`` or ``experiment:NAME``).

``--objects`` also names kinds of project configuration (:mod:`pipeline.common.config_kinds`):
``prompts``, ``functions``, ``project_scores``, ``project_tags``, ``views``, ``span_iframes``,
``automations``, ``settings``, or ``config`` for all of them. Those are not row objects:
:func:`parse_selection` passes over them and :func:`config_selection` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.config_kinds import ALL_CONFIG, BY_SELECTOR, KINDS
from pipeline.common.errors import UsageError
from pipeline.querylang.ast import ObjectType

_KINDS: dict[str, ObjectType] = {"dataset": "dataset", "experiment": "experiment"}
_PLURALS: dict[str, ObjectType] = {"datasets": "dataset", "experiments": "experiment"}
_EXPECTED = (
    "logs, datasets, experiments, dataset:NAME, experiment:NAME, "
    + ", ".join(kind.selector for kind in KINDS)
    + f" or {ALL_CONFIG}"
)


@dataclass(frozen=True)
class Selector:
    """One ``--objects`` item: every object of a kind (``name`` None), or the one called ``name``."""

    object_type: ObjectType
    name: str | None = None


def parse_selector(item: str) -> Selector | None:
    """One item, or None when it is not of the syntax."""
    kind, _, name = item.partition(":")
    if item in ("logs", "project_logs"):
        return Selector("project_logs")
    if item in _PLURALS:
        return Selector(_PLURALS[item])
    if kind in _KINDS and name:
        return Selector(_KINDS[kind], name)
    return None


def _is_config(item: str) -> bool:
    return item == ALL_CONFIG or item in BY_SELECTOR


def parse_selection(text: str, option: str = "--objects") -> list[Selector]:
    """Parse a comma list of row selectors; blank items and configuration kinds are passed
    over (:func:`config_selection` reads those)."""
    selectors: list[Selector] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item or _is_config(item):
            continue
        selector = parse_selector(item)
        if selector is None:
            raise UsageError(f"{option}: cannot understand {item!r} (expected {_EXPECTED})")
        selectors.append(selector)
    return selectors


def parse_one_object(text: str, option: str = "--to-object") -> tuple[ObjectType, str | None]:
    """One named destination: ``logs`` | ``dataset:NAME`` | ``experiment:NAME``."""
    selector = parse_selector(text.strip())
    if selector is None or (selector.object_type != "project_logs" and selector.name is None):
        raise UsageError(f"{option}: expected logs, dataset:NAME or experiment:NAME, got {text!r}")
    return selector.object_type, selector.name


def config_selection(text: str | None) -> list[str]:
    """The configuration kinds (API names, in recreation order) a comma list names; no list
    (an import's default: everything) names them all."""
    items = {raw.strip() for raw in (text or "").split(",")}
    if text is None or ALL_CONFIG in items:
        return [kind.name for kind in KINDS]
    return [kind.name for kind in KINDS if kind.selector in items]
