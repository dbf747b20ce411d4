"""Groups and users of one org by id, as its API names them: what a project score's
``config.visibility`` refers to (:func:`pipeline.common.config_kinds.visibility`).

Ids are an org's own: a copy into another org names that org's group of the same name and its
user with the same email, and verify compares them by those names. Each id is asked once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import list_all
from pipeline.common.config_kinds import visibility
from pipeline.common.errors import NotFoundError


class Principals:
    """One deployment's (one key's) view of groups and users."""

    def __init__(self, client: BraintrustClient) -> None:
        self.client = client
        self._found: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def _get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        if (kind, object_id) not in self._found:
            try:
                found: dict[str, Any] | None = await self.client.get_json(f"/v1/{kind}/{object_id}")
            except NotFoundError:  # not of this org (or gone)
                found = None
            self._found[kind, object_id] = found
        return self._found[kind, object_id]

    async def group(self, group_id: str) -> dict[str, Any] | None:
        """The org's group ``group_id``; None where the org has none of that id."""
        return await self._get("group", group_id)

    async def user(self, user_id: str) -> dict[str, Any] | None:
        """The org's member ``user_id``; None where the org has none of that id."""
        return await self._get("user", user_id)

    async def find_group(self, name: str, org_name: str) -> str | None:
        """The id of the org's group named ``name``."""
        async for group in list_all(self.client, "/v1/group", {"group_name": name, "org_name": org_name}):
            if group["name"] == name:
                return str(group["id"])
        return None

    async def find_user(self, email: str, org_name: str) -> str | None:
        """The id of the org's member whose email is ``email``."""
        async for user in list_all(self.client, "/v1/user", {"email": email, "org_name": org_name}):
            if user.get("email") == email:
                return str(user["id"])
        return None

    async def names(self, objects: Iterable[Any]) -> dict[str, str]:
        """Each group and user id the visibility of ``objects`` names, by the name verify
        compares (``group:<name>``, ``user:<email>``); an id this org does not have is left out."""
        named: dict[str, str] = {}
        for obj in objects:
            groups, users = visibility(obj)
            for group_id in groups:
                group = await self.group(group_id)
                if group is not None:
                    named[group_id] = f"group:{group['name']}"
            for user_id in users:
                user = await self.user(user_id)
                if user is not None and user.get("email"):
                    named[user_id] = f"user:{user['email']}"
        return named
