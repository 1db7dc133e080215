"""The private toggle on JupyterHub sharing, and who may launch where (a StudioSpawner mixin).

With ``c.StudioSpawner.workspace_sharing = True``, each start of a studio:

- requires a workspace where the owner has the launch role or above (the form's ``workspace``);
- lets only the owner (or a hub admin) change the studio's options (stored_options.py): a
  workspace admin starts it as its owner last saved it, so they cannot flip it to shared or
  change what it runs;
- makes the studio's shares match the toggle (``plan_studio_shares``): a private studio has
  none; a shared one is shared with the group ``workspace:<ws>:<share_min_role>`` and with
  each of its members by name.

Why both: the group share records the intent and is what JupyterHub's cookie checks use, but
JupyterHub 5.5 and 6.1 leave group shares out of the scopes of OAuth tokens (only user shares
are added), and a browser reaches a studio with an OAuth token. So each member also gets a user
share, and ``WorkspaceAuthenticator`` grants or revokes a member's user shares when their
groups change (``plan_member_shares``). Calls go through ``/hub/api/shares`` with the token of
a service that has ``SCOPES`` (``configure_workspace_sharing()`` sets it all up).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tornado import web
from traitlets import Bool, Integer, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from .hub_api import HubAPIError, HubClient
from .workspaces import (
    LAUNCH_ROLE,
    ROLES,
    WorkspaceConfigError,
    check_role,
    group_name,
    is_workspace_group,
    parse_group,
    workspaces_with,
)

SERVICE_NAME = "studio-sharing"
#: ``shares``: grant and revoke (it includes ``access:servers``, which a grant needs);
#: ``read:groups``: a group's members; ``read:users:name``: share with a user by name.
SCOPES = ["shares", "read:groups", "read:users:name"]
SHARE_ROLES = ROLES[: ROLES.index(LAUNCH_ROLE) + 1]  # the owner is always in the share's group


def sharing_service(token: str, name: str = SERVICE_NAME) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry whose token the hub uses (no process, no URL)."""
    return {"name": name, "api_token": token}


def sharing_role(name: str = SERVICE_NAME) -> dict[str, Any]:
    """The ``c.JupyterHub.load_roles`` entry granting the sharing service its scopes."""
    return {"name": f"{name}-service", "description": "Share studios with their workspace",
            "scopes": list(SCOPES), "services": [name]}


def configure_workspace_sharing(c: Any, token: str = "") -> str:
    """Turn on workspace sharing in a jupyterhub_config.py: the service, its role, both tokens.

    `token` defaults to a new random one per hub start (it never leaves the hub process).
    """
    token = token or secrets.token_hex(32)
    c.JupyterHub.services.append(sharing_service(token))
    c.JupyterHub.load_roles.append(sharing_role())
    c.StudioSpawner.workspace_sharing = True
    c.StudioSpawner.sharing_api_token = token
    c.WorkspaceAuthenticator.sharing_api_token = token
    return token


# --- what to change (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One share of a server, as the hub lists it."""

    owner: str
    server: str
    user: str | None = None
    group: str | None = None

    @classmethod
    def from_model(cls, model: dict[str, Any]) -> Share:
        return cls(model["server"]["user"]["name"], model["server"]["name"],
                   (model.get("user") or {}).get("name"), (model.get("group") or {}).get("name"))


@dataclass(frozen=True)
class SharePlan:
    """Changes to one server's shares."""

    revoke_all: bool = False
    revoke_users: tuple[str, ...] = ()
    revoke_groups: tuple[str, ...] = ()
    grant_group: str | None = None
    grant_users: tuple[str, ...] = ()


def plan_studio_shares(
    *, private: bool, workspace: str | None, min_role: str, owner: str,
    members: Iterable[str], current: Iterable[Share],
) -> SharePlan:
    """Private (or no workspace): revoke every share. Shared: the group and its members.

    Stale shares go: our groups of other workspaces or roles, and users who are not members
    (including shares made by hand: a shared studio is shared with its workspace, no more).
    """
    if private or not workspace:
        return SharePlan(revoke_all=True)
    target = group_name(workspace, min_role)
    wanted = set(members) - {owner}
    current = list(current)
    have_users = {s.user for s in current if s.user}
    return SharePlan(
        revoke_users=tuple(sorted(have_users - wanted)),
        revoke_groups=tuple(sorted(
            {s.group for s in current if s.group and is_workspace_group(s.group)} - {target})),
        grant_group=target,
        grant_users=tuple(sorted(wanted - have_users)),
    )


def changed_groups(old: Iterable[str], new: Iterable[str]) -> tuple[set[str], set[str]]:
    """The groups a member (joined, left) among those studios can be shared with."""

    def shareable(groups: Iterable[str]) -> set[str]:
        return {g for g in groups if (parsed := parse_group(g)) and parsed[1] in SHARE_ROLES}

    old_ours, new_ours = shareable(old), shareable(new)
    return new_ours - old_ours, old_ours - new_ours


# --- the hub's share API (thin) ---------------------------------------------------------------


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


class HubShares:
    """The share calls the hub makes on itself, with the sharing service's token."""

    def __init__(self, api_url: str, token: str) -> None:
        self.client = HubClient(api_url, token, retries=2)

    async def __aenter__(self) -> HubShares:
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.client.close()

    async def _items(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paginated listing; none when its group or server does not exist."""
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            response = await self.client.request("GET", f"{path}?offset={offset}&limit=200",
                                                 ok=frozenset({404}))
            if response.code == 404:
                return items
            page = json.loads(response.body)
            items += page["items"]
            following = page["_pagination"]["next"]
            if not following:
                return items
            offset = following["offset"]

    async def members(self, group: str) -> list[str]:
        """The group's users; none when the group does not exist yet."""
        response = await self.client.request("GET", _path("groups", group),
                                             ok=frozenset({404}))
        return [] if response.code == 404 else json.loads(response.body)["users"]

    async def of_server(self, owner: str, server: str) -> list[Share]:
        return [Share.from_model(m) for m in await self._items(_path("shares", owner, server))]

    async def of_group(self, group: str) -> list[Share]:
        items = await self._items(_path("groups", group, "shared"))
        return [Share.from_model(m) for m in items]

    async def apply(self, owner: str, server: str, plan: SharePlan) -> None:
        path = _path("shares", owner, server)
        if plan.revoke_all:
            await self.client.request("DELETE", path)
        for user in plan.revoke_users:
            await self.client.request("PATCH", path, body={"user": user})
        for group in plan.revoke_groups:
            await self.client.request("PATCH", path, body={"group": group})
        if plan.grant_group:
            await self.client.request("POST", path, body={"group": plan.grant_group})
        for user in plan.grant_users:
            await self.client.request("POST", path, body={"user": user})

    async def follow_member(self, user: str, old: Iterable[str], new: Iterable[str]) -> None:
        """Grant or revoke a member's user shares on the studios shared with the groups they
        joined or left (JupyterHub leaves group shares out of OAuth tokens)."""
        joined, left = changed_groups(old, new)
        changes = [(g, SharePlan(grant_users=(user,))) for g in sorted(joined)]
        changes += [(g, SharePlan(revoke_users=(user,))) for g in sorted(left)]
        for group, plan in changes:
            for share in await self.of_group(group):
                if share.owner == user:
                    continue
                try:
                    await self.apply(share.owner, share.server, plan)
                except HubAPIError as error:
                    if error.code != 404:  # 404: the studio was deleted meanwhile
                        raise


def sharing_error(error: HubAPIError, setting: str) -> web.HTTPError:
    """An error for the hub log and the user that says which setting to check."""
    message = (f"Sharing studios with their workspace failed ({error}); check {setting} and "
               "the role of its service (docs/collaboration.md)")
    failure = web.HTTPError(500, "%s", message)
    failure.jupyterhub_message = message  # type: ignore[attr-defined]
    return failure


# --- the spawner mixin ------------------------------------------------------------------------


class WorkspaceSharing(LoggingConfigurable):
    """StudioSpawner's collaboration settings and start-time checks (see docs/collaboration.md)."""

    workspace_sharing = Bool(
        False,
        config=True,
        help="""Studios belong to a workspace and follow the private toggle: shared studios are
        shared with the workspace's members (share_min_role or above) through JupyterHub
        sharing; private ones with no one. Starting needs the launch role in the workspace.
        Needs sharing_api_token and studio_spawner.auth.WorkspaceAuthenticator.""",
    )
    share_min_role = Unicode(
        "connect",
        config=True,
        help="Lowest workspace role that may open shared studios: view, connect or launch.",
    )
    sharing_api_token = Unicode(
        "",
        config=True,
        help="""API token of the hub service that grants and revokes shares (its role:
        studio_spawner.sharing.sharing_role()); configure_workspace_sharing(c) sets it.""",
    )
    server_auth_cache_seconds = Integer(
        30,
        min=0,
        allow_none=True,
        config=True,
        help="""How long a running studio trusts the hub's answer about a visitor
        (HubOAuth.cache_max_age in the studio; JupyterHub's default is 300). With
        Authenticator.auth_refresh_age it bounds how soon a removed member loses access.
        None: leave the server's default.""",
    )

    @validate("share_min_role")
    def _check_share_min_role(self, proposal: dict) -> str:
        try:
            return check_role(proposal["value"], "StudioSpawner.share_min_role", SHARE_ROLES)
        except WorkspaceConfigError as error:
            raise TraitError(str(error)) from None

    def launch_workspaces(self) -> list[str]:
        """The workspaces where the owner has the launch role or above (from their groups)."""
        if not self.workspace_sharing:
            return []
        return workspaces_with((group.name for group in self.user.groups), LAUNCH_ROLE)

    # --- start -----------------------------------------------------------------------------

    def start(self) -> Any:
        """Check who changes the options and set the shares, then start (KubeSpawner)."""
        if not self.workspace_sharing:
            return super().start()
        options = self.studio_options  # validated by StudioSpawner.start just before
        return self._share_then_start(options.private, options.workspace)

    async def _share_then_start(self, private: bool, workspace: str | None) -> Any:
        await self.sync_shares(private, workspace)
        return await super().start()

    async def sync_shares(self, private: bool, workspace: str | None) -> None:
        """Make the server's shares match the private toggle (see plan_studio_shares)."""
        if not self.sharing_api_token:
            raise web.HTTPError(
                500, "StudioSpawner.sharing_api_token is not set: see "
                "studio_spawner.sharing.configure_workspace_sharing (docs/collaboration.md)")
        owner, server = self.user.name, self.name
        try:
            async with HubShares(self.hub.api_url, self.sharing_api_token) as hub:
                members: list[str] = []
                current: list[Share] = []
                if not private and workspace:
                    members = await hub.members(group_name(workspace, self.share_min_role))
                    current = await hub.of_server(owner, server)
                plan = plan_studio_shares(
                    private=private, workspace=workspace, min_role=self.share_min_role,
                    owner=owner, members=members, current=current,
                )
                await hub.apply(owner, server, plan)
        except HubAPIError as error:
            raise sharing_error(error, "StudioSpawner.sharing_api_token") from error
        self.log.info("Shares of %s: %s", self._log_name, plan)

    # --- the studio server's auth cache, and state -----------------------------------------

    def get_args(self) -> list[str]:
        args = list(super().get_args())
        if self.workspace_sharing and self.server_auth_cache_seconds is not None:
            args.append(f"--HubOAuth.cache_max_age={self.server_auth_cache_seconds}")
        return args
