"""Groups and users of one org by id, as its API names them: what a project score's
``config.visibility`` refers to (:func:`pipeline.common.config_kinds.visibility`).

Ids are an org's own: a copy into another org names that org's group of the same name and its
member with the same email, and verify compares them by those names (``verify.py``). A key may reach several
orgs, so a group counts as the org's only when it says so (``org_id``), and a user only when
the org's member list holds them. Each id is asked once.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import list_all
from pipeline.common.errors import NotFoundError


class Principals:
    """The groups and members of org ``org_id``, as ``client`` reaches them."""

    def __init__(self, client: BraintrustClient, org_id: str) -> None:
        self.client = client
        self.org_id = org_id
        self._org_name: str | None = None
        self._found: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def org_name(self) -> str:
        if self._org_name is None:
            org = await self.client.get_json(f"/v1/organization/{self.org_id}")
            self._org_name = str(org["name"])
        return self._org_name

    async def group(self, group_id: str) -> dict[str, Any] | None:
        """The org's group ``group_id``; None where the org has none of that id."""
        if ("group", group_id) not in self._found:
            try:
                found: dict[str, Any] | None = await self.client.get_json(f"/v1/group/{group_id}")
            except NotFoundError:
                found = None
            if found is not None and found.get("org_id") != self.org_id:
                found = None  # another org's, which the key reaches too
            self._found["group", group_id] = found
        return self._found["group", group_id]

    async def user(self, user_id: str) -> dict[str, Any] | None:
        """The org's member ``user_id``; None where the org has no member of that id."""
        if ("user", user_id) not in self._found:
            params = {"ids": user_id, "org_name": await self.org_name()}
            found = None
            async for user in list_all(self.client, "/v1/user", params):
                if user.get("id") == user_id:
                    found = user
            self._found["user", user_id] = found
        return self._found["user", user_id]

    async def find_group(self, name: str) -> dict[str, Any] | None:
        """The org's group named ``name``."""
        async for group in list_all(
            self.client, "/v1/group", {"group_name": name, "org_name": await self.org_name()}
        ):
            if group["name"] == name and group.get("org_id") == self.org_id:
                found: dict[str, Any] = group
                return found
        return None

    async def find_user(self, email: str) -> str | None:
        """The id of the org's member whose email is ``email``."""
        async for user in list_all(
            self.client, "/v1/user", {"email": email, "org_name": await self.org_name()}
        ):
            if user.get("email") == email:
                return str(user["id"])
        return None
