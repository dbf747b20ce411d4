"""Copying ACLs and group memberships with a migration (``--acls``; off by default).

First the source org's **groups** are copied, as Braintrust's own migration tool copies them
(org level): each is the destination org's group of the same name, created when missing, its
member groups and (with ``--map-users``) member users added. Then, for each copied object (the
project, its datasets and experiments, its prompts), the source's ACLs are listed and granted
again on the destination's copy:

- a grant to a **group** names the destination's group of the same name;
- a grant of a **custom role** names the destination's role of the same name, created with the
  same permissions and inherited roles (``member_roles``, mapped the same way) when missing;
- a grant to a **user**, and a group's member users, are mapped by email, and only with
  ``--map-users``: the destination's user with the same email. A user the destination org
  does not have is listed, never invented (no invitation is sent).

Granting is idempotent (the API returns an identical ACL as it is), so a re-run adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import list_all
from pipeline.api.principals import Principals
from pipeline.common.config_kinds import visibility
from pipeline.common.errors import NotFoundError


@dataclass(frozen=True)
class AclTarget:
    """One copied object: its ACL object type, source id, destination id and label."""

    object_type: str
    source_id: str
    destination_id: str
    label: str


@dataclass
class AclOutcome:
    granted: int = 0
    groups_created: int = 0
    roles_created: int = 0
    #: Grants and memberships not copied, one line each (users missing at the destination, or
    #: user grants without ``--map-users``).
    not_copied: list[str] = field(default_factory=list)


class AclCopy:
    def __init__(
        self,
        source: BraintrustClient,
        destination: BraintrustClient,
        destination_project: dict[str, Any],
        *,
        map_users: bool,
    ) -> None:
        self.source = source
        self.destination = destination
        self.project = destination_project
        self.map_users = map_users
        self.outcome = AclOutcome()
        self._users: dict[str, str | None] = {}
        self._emails: dict[str, str] = {}
        self._groups: dict[str, str] = {}
        self._roles: dict[str, str] = {}
        self._source_roles: dict[str, dict[str, Any]] = {}
        #: The destination org's groups and members.
        self._theirs = Principals(destination, str(destination_project["org_id"]))
        self._grouped = False

    async def groups(self, source_project: dict[str, Any]) -> None:
        """The source org's groups (as Braintrust's own migration tool copies them, org level):
        before the configuration, whose project scores' visibility names groups; once."""
        if self._grouped:
            return
        self._grouped = True
        org = await self.source.get_json(f"/v1/organization/{source_project['org_id']}")
        async for group in list_all(self.source, "/v1/group", {"org_name": org["name"]}):
            await self._group(group["id"], group)

    async def copy(self, source_project: dict[str, Any], targets: list[AclTarget]) -> AclOutcome:
        """The source org's groups (copied once, however often asked), then the grants on each
        target."""
        await self.groups(source_project)
        for target in targets:
            params = {"object_type": target.object_type, "object_id": target.source_id}
            async for acl in list_all(self.source, "/v1/acl", params):
                await self._grant(target, acl)
        return self.outcome

    async def _org(self) -> str:
        """The destination org's name: groups, roles and users are looked up within it."""
        return await self._theirs.org_name()

    async def _grant(self, target: AclTarget, acl: dict[str, Any]) -> None:
        body: dict[str, Any] = {"object_type": target.object_type, "object_id": target.destination_id}
        what = acl.get("permission") or "a role"
        if acl.get("user_id"):
            user = await self._user(acl["user_id"], f"{what} on {target.label}")
            if user is None:
                return
            body["user_id"] = user
        elif acl.get("group_id"):
            body["group_id"] = await self._group(acl["group_id"])
        if acl.get("role_id"):
            body["role_id"] = await self._role(acl["role_id"])
        else:
            body["permission"] = acl["permission"]
        if acl.get("restrict_object_type"):
            body["restrict_object_type"] = acl["restrict_object_type"]
        await self.destination.post_json("/v1/acl", body)
        self.outcome.granted += 1

    async def _user(self, user_id: str, what: str) -> str | None:
        """The destination user with the source user's email; None (and a line) when there is
        none or users are not mapped."""
        if not self.map_users:
            self.outcome.not_copied.append(
                f"{what}: a user, not mapped (pass --map-users to map users by email)"
            )
            return None
        if user_id not in self._users:
            email = await self._email(user_id)
            self._users[user_id] = None if email is None else await self._theirs.find_user(email)
            self._emails[user_id] = email or user_id
        if self._users[user_id] is None:
            self.outcome.not_copied.append(
                f"{what}: user {self._emails[user_id]} has no account in the destination org"
            )
        return self._users[user_id]

    async def _email(self, user_id: str) -> str | None:
        try:
            user = await self.source.get_json(f"/v1/user/{user_id}")
        except NotFoundError:
            self.outcome.not_copied.append(f"source user {user_id}: not found, so not mapped")
            return None
        return str(user["email"]) if user.get("email") else None

    async def _group(self, group_id: str, group: dict[str, Any] | None = None) -> str:
        """The destination group named as the source's, created when missing; its member users
        (with ``--map-users``) and member groups are added."""
        if group_id in self._groups:
            return self._groups[group_id]
        if group is None:
            group = await self.source.get_json(f"/v1/group/{group_id}")
        org = await self._org()
        mine = await self._theirs.find_group(group["name"])
        if mine is None:
            mine = await self.destination.post_json(
                "/v1/group", {"name": group["name"], "description": group.get("description"), "org_name": org}
            )
            self.outcome.groups_created += 1
        self._groups[group_id] = mine["id"]
        users = []
        for member in group.get("member_users") or []:
            user = await self._user(member, f"member of group {group['name']!r}")
            if user is not None and user not in (mine.get("member_users") or []):
                users.append(user)
        groups = [await self._group(g) for g in group.get("member_groups") or [] if g != group_id]
        groups = [g for g in groups if g not in (mine.get("member_groups") or [])]
        if users or groups:
            await self.destination.patch_json(
                f"/v1/group/{mine['id']}", {"add_member_users": users, "add_member_groups": groups}
            )
        return str(mine["id"])

    async def _role(self, role_id: str, inheriting: frozenset[str] = frozenset()) -> str:
        """The destination role named as the source's custom role, created when missing with
        its permissions and the roles it inherits (``member_roles``, each mapped the same way
        first; a built-in role has the same name everywhere). ``inheriting``: the roles whose
        copy waits for this one."""
        if role_id in self._roles:
            return self._roles[role_id]
        role = await self._source_role(role_id)
        org = await self._org()
        found = [
            r
            async for r in list_all(
                self.destination, "/v1/role", {"role_name": role["name"], "org_name": org}
            )
        ]
        mine = next((r for r in found if r["name"] == role["name"]), None)
        if mine is None:
            inherited = [
                mapped
                for member in role.get("member_roles") or []
                if (mapped := await self._inherited(role, member, inheriting | {role_id})) is not None
            ]
            body = {"name": role["name"], "description": role.get("description"),
                    "member_permissions": role.get("member_permissions") or [], "member_roles": inherited or None,
                    "org_name": org}  # fmt: skip
            mine = await self.destination.post_json("/v1/role", body)
            self.outcome.roles_created += 1
        self._roles[role_id] = str(mine["id"])
        return self._roles[role_id]

    async def _inherited(self, role: dict[str, Any], member: str, inheriting: frozenset[str]) -> str | None:
        """The destination's copy of a role ``role`` inherits; None, listed as not copied,
        where it cannot be (a cycle of roles inheriting each other, or a role since deleted)."""
        if member in inheriting:
            self.outcome.not_copied.append(
                f"role {role['name']!r}: inherits role {member}, which inherits it back; that inheritance is left out"
            )
            return None
        try:
            await self._source_role(member)
        except NotFoundError:
            self.outcome.not_copied.append(
                f"role {role['name']!r}: inherits role {member}, which the source no longer has; left out"
            )
            return None
        return await self._role(member, inheriting)

    async def _source_role(self, role_id: str) -> dict[str, Any]:
        """The source's role ``role_id`` (read once)."""
        if role_id not in self._source_roles:
            self._source_roles[role_id] = await self.source.get_json(f"/v1/role/{role_id}")
        return self._source_roles[role_id]


@dataclass
class VisibilityMap:
    """The destination's group or user for each id the copied project scores' visibility
    names (``ids``), and why each of the others has none (``missing``)."""

    ids: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


async def map_visibility(
    objects: list[dict[str, Any]],
    destination: Principals,
    source: Principals | None,
    *,
    map_users: bool,
) -> VisibilityMap:
    """Map the group and user ids ``objects`` (project scores) make visible to: an id the
    destination org has is its own (a copy within the org); else, read from the ``source``
    (a migration; an import has no source to ask), a group maps to the destination org's group
    of the same name (``--acls`` copies groups first), a user to its member with the same email,
    with ``map_users`` only, as ACL grants do. A copy never widens who sees a score: an id with
    no counterpart leaves its score uncopied."""
    found = VisibilityMap()
    groups = list(dict.fromkeys(g for obj in objects for g in visibility(obj)[0]))
    users = list(dict.fromkeys(u for obj in objects for u in visibility(obj)[1]))
    for group_id in groups:
        if await destination.group(group_id) is not None:
            continue
        group = None if source is None else await source.group(group_id)
        mine = None if group is None else await destination.find_group(group["name"])
        if mine is not None:
            found.ids[group_id] = str(mine["id"])
        elif group is not None:
            found.missing[group_id] = (
                f"group {group['name']!r} in its visibility (the destination org has no group of that name)"
            )
        elif source is None:
            found.missing[group_id] = (
                f"group {group_id} in its visibility (not of the destination org; an import cannot "
                "map groups by name)"
            )
        else:
            found.missing[group_id] = f"group {group_id} in its visibility (a group of neither org)"
    for user_id in users:
        if await destination.user(user_id) is not None:
            continue
        user = None if source is None else await source.user(user_id)
        email = None if user is None else user.get("email")
        if not email:
            how = "; an import cannot map users by email" if source is None else ""
            found.missing[user_id] = (
                f"user {user_id} in its visibility (not a member of the destination org{how})"
            )
        elif not map_users:
            found.missing[user_id] = (
                f"user {email} in its visibility (not mapped: pass --map-users to map users by email)"
            )
        elif (member := await destination.find_user(email)) is not None:
            found.ids[user_id] = member
        else:
            found.missing[user_id] = f"user {email} in its visibility (no account in the destination org)"
    return found
