"""Project configuration objects: the one place that knows their kinds.

A project holds more than rows: prompts, functions (scorers, tools, prompts-as-functions),
project scores, project tags, views, span iframes, project automations and the project's own
settings. This module says, per kind, its ``--objects`` name, its REST collection, the fields
that name an object within its project (a ``slug`` for prompts and functions, a view's
``view_type`` and ``name``, a ``name`` for the others), the order a copy recreates kinds in,
and which fields a copy changes. It also holds the pure transforms every stage shares: remapping the ids an object holds,
finding the references that cannot be remapped, ordering objects that refer to each other,
and the form verify compares (ids replaced by the names of what they point at).

Kinds are recreated in this order: tags and span iframes (nothing refers from them),
functions and prompts together (one id space: a prompt's ``tool_functions`` and a scorer's
``prompt_data`` name functions, and a prompt is a function too; within the group an object
comes after those it names), project scores (their online scorers name functions), views
(their filters name scores and tags), automations, and last the settings (which name a
baseline experiment and a default preprocessor function).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.common.versions import version_id

#: The ``--objects`` item selecting every kind below.
ALL_CONFIG = "config"


@dataclass(frozen=True)
class ConfigKind:
    """One kind of configuration object."""

    #: The kind as the API names it (``prompt``); also its directory in the export layout.
    name: str
    #: Its ``--objects`` item (``prompts``).
    selector: str
    #: The REST collection (``/v1/prompt``); None for the settings, a field of the project.
    path: str | None
    #: The fields naming an object within the project: unique there, how a re-run finds it.
    key: tuple[str, ...]
    #: Objects that may refer to each other by id are recreated in one group, ordered by
    #: their references; groups go in ``order``.
    order: int
    #: The list route filters by ``project_id`` (else the listing is filtered here).
    by_project: bool = True


KINDS: Final[tuple[ConfigKind, ...]] = (
    ConfigKind("project_tag", "project_tags", "/v1/project_tag", ("name",), 0),
    ConfigKind("span_iframe", "span_iframes", "/v1/span_iframe", ("name",), 1, by_project=False),
    ConfigKind("function", "functions", "/v1/function", ("slug",), 2),
    ConfigKind("prompt", "prompts", "/v1/prompt", ("slug",), 2),
    ConfigKind("project_score", "project_scores", "/v1/project_score", ("name",), 3),
    ConfigKind("view", "views", "/v1/view", ("view_type", "name"), 4, by_project=False),
    ConfigKind("project_automation", "automations", "/v1/project_automation", ("name",), 5, by_project=False),
    ConfigKind("settings", "settings", None, ("name",), 6),
)
BY_NAME: Final[dict[str, ConfigKind]] = {kind.name: kind for kind in KINDS}
BY_SELECTOR: Final[dict[str, ConfigKind]] = {kind.selector: kind for kind in KINDS}

#: The kind whose earlier versions are kept, and the name of the file (and manifest entry)
#: holding them: every earlier version, whole, one a line, oldest first per object.
VERSIONS_OF: Final[dict[str, str]] = {"prompt": "prompt_version"}

#: The one object of the ``settings`` kind: the project's ``settings`` field.
SETTINGS_NAME = "settings"

#: Fields the server assigns (ids, versions, owners, times, order): never sent on create,
#: ignored by verify. ``project_id`` and a view's ``object_id`` are the destination's own.
SERVER_FIELDS: Final[frozenset[str]] = frozenset(
    {"id", "_xact_id", "log_id", "org_id", "project_id", "user_id", "created", "position", "object_id"}
)

#: Kinds other objects refer to by id. A load that copies some kinds but not these still
#: reads them, only to find their copies at the destination (by key) for its references.
REFERENCED: Final[tuple[str, ...]] = ("function", "prompt")


def lookup_kinds(kinds: list[str]) -> list[str]:
    """The referenced kinds a load of ``kinds`` reads without copying them."""
    return [kind for kind in REFERENCED if kind not in kinds] if kinds else []


#: Kinds sharing one namespace of keys in a project: a prompt is a function, so a prompt's
#: slug taken by a function (or the reverse) at the destination is a collision.
SHARED_KEYS: Final[frozenset[str]] = frozenset({"function", "prompt"})


@dataclass
class ConfigSet:
    """One project's configuration objects per kind name, in listing order."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Kinds asked for that the deployment does not serve (their list route is a 404).
    unserved: list[str] = field(default_factory=list)
    #: Each prompt's versions before its current one, oldest first, by prompt id.
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: The name of the project the objects were read from (None: not known), which a
    #: function reference by project name and slug uses for a function of that project.
    project_name: str | None = None

    def take(self, kinds: list[str]) -> ConfigSet:
        """Move ``kinds`` out of this set into a new one (the kinds a load only looks up)."""
        taken = ConfigSet(
            {k: self.objects.pop(k) for k in kinds if k in self.objects}, project_name=self.project_name
        )
        self.unserved = [k for k in self.unserved if k not in kinds]
        return taken


def key_of(kind: ConfigKind, obj: Mapping[str, Any]) -> str:
    """The object's key within its project (``view_type/name`` for a view)."""
    return "/".join(str(obj.get(field) or "") for field in kind.key)


def label(kind: ConfigKind, obj: Mapping[str, Any]) -> str:
    """``prompt 'summarize'``: how messages name an object."""
    return f"{kind.name} {key_of(kind, obj)!r}"


def is_code_bundle(kind: ConfigKind, obj: Mapping[str, Any]) -> bool:
    """A code function whose bundle lives in the source org's storage: it cannot be copied
    (inline code can)."""
    data = obj.get("function_data") or {}
    inner = data.get("data") or {} if isinstance(data, dict) else {}
    return kind.name == "function" and data.get("type") == "code" and inner.get("type") == "bundle"


def is_prompt_function(obj: Mapping[str, Any]) -> bool:
    """A function that is a prompt (``function_data.type == "prompt"``)."""
    data = obj.get("function_data")
    return isinstance(data, dict) and data.get("type") == "prompt"


#: A reference pinned to a version: (the id it names, the version), read from a mapping by
#: :func:`pinned_version` and rewritten by :func:`remap`.
Pin = tuple[str, str]


def slug_pin(project_name: str, slug: str) -> str:
    """What a pin by project name and slug (``{"project_name", "slug", "version"}``) names, as
    the id of a :data:`Pin` (an id holds no ``/``)."""
    return f"{project_name}/{slug}"


def pinned_version(node: Mapping[str, Any]) -> tuple[Pin, str] | None:
    """The version ``node`` pins (as a transaction id, :func:`version_id`), with the field
    holding it: a function reference's ``version`` (``{"type": "function", "id", "version"}``,
    ``{"function_id", "version"}``) or a prompt origin's ``prompt_version``; None where it pins
    none."""
    version = node.get("version")
    if isinstance(version, str):
        named = node.get("function_id")
        if not isinstance(named, str) and node.get("type") == "function":
            named = node.get("id")
        if not isinstance(named, str) and isinstance(node.get("slug"), str):
            project = node.get("project_name")
            named = slug_pin(project, node["slug"]) if isinstance(project, str) else None
        if isinstance(named, str):
            return (named, version_id(version)), "version"
    version, named = node.get("prompt_version"), node.get("prompt_id")
    if isinstance(version, str) and isinstance(named, str):
        return (named, version_id(version)), "prompt_version"
    return None


def remap(
    value: Any,
    id_map: Mapping[str, str],
    projects: Mapping[str, str] | None = None,
    versions: Mapping[Pin, str] | None = None,
) -> Any:
    """``value`` with every string that is a source id in ``id_map`` replaced by its
    destination id, at any depth. Ids are UUIDs, so a string equal to one is that reference.

    ``projects`` (source project name -> destination name) renames the project of each
    function reference by project name and slug (``{"project_name": ..., "slug": ...}``, the
    spec's FunctionId): a name is text, so only that field of such a reference is one.
    ``versions`` rewrites the version a reference pins (:func:`pinned_version`), by the
    source id and version it names."""
    if isinstance(value, str):
        return id_map.get(value, value)
    if isinstance(value, dict):
        out = {k: remap(v, id_map, projects, versions) for k, v in value.items()}
        named = value.get("project_name")
        if projects and isinstance(named, str) and named in projects and isinstance(value.get("slug"), str):
            out["project_name"] = projects[named]
        pin = pinned_version(value) if versions else None
        if pin is not None and versions is not None and pin[0] in versions:
            out[pin[1]] = versions[pin[0]]
        return out
    if isinstance(value, list):
        return [remap(v, id_map, projects, versions) for v in value]
    return value


def pins(value: Any) -> list[Pin]:
    """Every version ``value``'s references pin (:func:`pinned_version`)."""
    return [found[0] for node in _mappings(value) if (found := pinned_version(node)) is not None]


def current_versions(config: ConfigSet) -> dict[Pin, str]:
    """Each object's current version as a pin, by what it names: ``{(id, _xact_id): label}``
    (and by its project's name and slug), how verify names a reference pinned to it on either
    side."""
    found: dict[Pin, str] = {}
    for name, objects in config.objects.items():
        for obj in objects:
            if name in BY_NAME and obj.get("id") and obj.get("_xact_id"):
                shown = f"{label(BY_NAME[name], obj)} as it is"
                found[str(obj["id"]), str(obj["_xact_id"])] = shown
                if config.project_name and obj.get("slug"):
                    found[slug_pin(config.project_name, str(obj["slug"])), str(obj["_xact_id"])] = shown
    return found


def _mappings(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside ``value``, ``value`` too, at any depth."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _mappings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _mappings(item)


def references(value: Any) -> list[str]:
    """The ids an object refers to that must exist for it to work: every saved function
    reference (``{"type": "function", "id": ...}``: prompt tools, online scorers, the default
    preprocessor; ``{"function_id": ...}``, the spec's FunctionId: a graph node's function),
    and the settings' ``baseline_experiment_id``."""
    found: list[str] = []
    for node in _mappings(value):
        if node.get("type") == "function" and isinstance(node.get("id"), str):
            found.append(node["id"])
        found += [
            node[key] for key in ("function_id", "baseline_experiment_id") if isinstance(node.get(key), str)
        ]
    return found


#: An ``origin``'s ``object_type`` naming an object of the functions' and prompts' group.
_ORIGIN_KINDS: Final = frozenset({"prompt", "function"})


def provenance(value: Any) -> list[str]:
    """The ids of the objects ``value`` says it was made from: a prompt's
    ``prompt_data.origin.prompt_id``, a function's ``origin`` (``object_type`` prompt or
    function, ``object_id``). A copy is written after them so it names their copies; one
    naming an object the copy does not hold (another project's) keeps the id, as a record."""
    found: list[str] = []
    for node in _mappings(value):
        if isinstance(node.get("prompt_id"), str):
            found.append(node["prompt_id"])
        if node.get("object_type") in _ORIGIN_KINDS and isinstance(node.get("object_id"), str):
            found.append(node["object_id"])
    return found


def visibility(value: Any) -> tuple[list[str], list[str]]:
    """The group ids and user ids a project score's ``config.visibility`` names (who may see
    the score): ids of its org, which a copy into another org must name that org's own for."""
    config = value.get("config") if isinstance(value, dict) else None
    seen = config.get("visibility") if isinstance(config, dict) else None
    if not isinstance(seen, dict):
        return [], []

    def ids(key: str) -> list[str]:
        found = seen.get(key)
        return [x for x in found if isinstance(x, str)] if isinstance(found, list) else []

    return ids("groups"), ids("users")


def slug_references(value: Any, project_name: str | None) -> list[str]:
    """The slugs of the functions ``value`` names by project name and slug
    (``{"project_name": ..., "slug": ...}``) in project ``project_name``: its own, which a copy
    must hold for the reference to work once renamed."""
    return [
        node["slug"]
        for node in _mappings(value)
        if project_name is not None
        and node.get("project_name") == project_name
        and isinstance(node.get("slug"), str)
    ]


def create_body(kind: ConfigKind, obj: Mapping[str, Any], project_id: str) -> dict[str, Any]:
    """The create/replace request for ``obj`` (already remapped) in project ``project_id``."""
    body = {k: v for k, v in obj.items() if k not in SERVER_FIELDS and v is not None}
    if kind.name == "view":
        return {**body, "object_type": "project", "object_id": project_id}
    return {**body, "project_id": project_id}


def comparable(
    obj: Mapping[str, Any],
    names: Mapping[str, str],
    project_name: str | None = None,
    versions: Mapping[Pin, str] | None = None,
) -> dict[str, Any]:
    """``obj`` as verify compares it: without the fields a copy changes or that are null
    (the API reports a missing field as null), every id it holds replaced by the name of
    what it points at (``names``), a reference by name to a function of its own project
    (``project_name``) naming it as ``project``, and a version pinned to an object's current
    one named as such (``versions``, :func:`current_versions`), so a copy compares equal to
    its source."""
    kept = {k: v for k, v in obj.items() if k not in SERVER_FIELDS and v is not None}
    own = {project_name: "project"} if project_name is not None else None
    named: dict[str, Any] = remap(kept, names, own, versions)
    return named


def ordered_levels(
    objects: list[dict[str, Any]],
    history: Mapping[str, list[dict[str, Any]]] | None = None,
    project_name: str | None = None,
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """``objects`` (one group) in levels: each object after those of the group it refers to
    and, unless that makes a cycle, those it was made from (:func:`provenance`) or one of its
    earlier versions (``history``, by id: a prompt's, written before it) refers to; objects of
    one level independent of each other; and the objects in a reference cycle, which no order
    can create. A reference by ``project_name`` (the objects' own project) and slug counts as
    one by id."""
    position = {str(o["id"]): i for i, o in enumerate(objects) if o.get("id")}
    if project_name is not None:
        position.update(
            (slug_pin(project_name, str(o["slug"])), i) for i, o in enumerate(objects) if o.get("slug")
        )
    history = history or {}

    def among(ids: list[str], i: int) -> set[int]:
        return {position[r] for r in ids if r in position and position[r] != i}

    def earlier(obj: dict[str, Any]) -> list[str]:
        return [r for version in history.get(str(obj.get("id")), []) for r in references(version)]

    def named(obj: dict[str, Any]) -> list[str]:
        if project_name is None:
            return references(obj)
        return [
            *references(obj),
            *(slug_pin(project_name, slug) for slug in slug_references(obj, project_name)),
        ]

    needs = {i: among(named(o), i) for i, o in enumerate(objects)}
    after = {i: among([*provenance(o), *earlier(o)], i) for i, o in enumerate(objects)}
    levels: list[list[dict[str, Any]]] = []
    done: set[int] = set()
    while needs:
        ready = [i for i in needs if needs[i] | after[i] <= done]
        if not ready:  # made from one another: the ones others wait for go first
            waited: set[int] = set().union(*(after[i] for i in needs))
            ready = [i for i in needs if needs[i] <= done and i in waited]
        if not ready:  # made from objects in a cycle, which will never be written: go anyway
            ready = [i for i in needs if needs[i] <= done]
        if not ready:
            break
        levels.append([objects[i] for i in ready])
        done.update(ready)
        for i in ready:
            del needs[i]
    return levels, [objects[i] for i in sorted(needs)]
