"""Workspace membership for any JupyterHub authenticator: groups and managed roles.

``WorkspaceAuthenticator`` is a mixin that goes before a base authenticator::

    class MyAuthenticator(WorkspaceAuthenticator, GenericOAuthenticator): ...
    # or: c.JupyterHub.authenticator_class = with_workspaces(GenericOAuthenticator)

At login and at every auth refresh it adds the user's workspace groups (see workspaces.py) to
the groups the base authenticator returned, and sets the managed roles: the default ``user``
(and ``admin`` for hub admins) plus ``workspace-<ws>-managers`` in each workspace where the user
is an admin or owner. Membership comes from ``workspaces``, ``workspaces_file`` (re-read when it
changes) and the base authenticator's groups through ``claim_pattern``. With
``sharing_api_token``, a member's shares on shared studios follow their group changes at once
(see sharing.py for why groups alone do not reach a running studio).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jupyterhub.auth import Authenticator, DummyAuthenticator
from jupyterhub.utils import maybe_future
from traitlets import Dict, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .hub_api import HubAPIError
from .sharing import HubShares, sharing_error
from .workspaces import (
    ClaimMapping,
    WorkspaceConfigError,
    at_least,
    check_role,
    groups_for,
    is_workspace_group,
    manager_role_name,
    manager_scopes,
    merge,
    parse_members,
    roles_of,
)

SETTING = "WorkspaceAuthenticator"
DEFAULT_ROLES = ("user", "admin")


class WorkspaceAuthenticator(LoggingConfigurable):
    """Mixin: put it before any Authenticator to give users their workspace groups and roles."""

    workspaces = Dict(
        config=True,
        help="""Workspace members: {workspace: {user name: role}}, roles being view, connect,
        launch, maintain, admin or owner; the user name '*' stands for every user. Merged with
        workspaces_file and claim groups (the highest role wins).""",
    )
    workspaces_file = Unicode(
        "",
        config=True,
        help="""A YAML file with the same shape as `workspaces`, re-read when it changes (a
        broken edit is logged and the last valid content kept). '' = none.""",
    )
    claim_pattern = Unicode(
        "",
        config=True,
        help=r"""Regular expression fully matched against each group the base authenticator
        returns (e.g. OIDC groups), with named groups 'workspace' and 'role', e.g.
        '(?P<workspace>[a-z0-9-]+):(?P<role>[a-z]+)' for 'genomics:admin'. '' = off.""",
    )
    claim_roles = Dict(
        Unicode(),
        config=True,
        help="""Rename the identity provider's role words to ours, e.g.
        {'admins': 'admin', 'members': 'launch'}.""",
    )
    manager_min_role = Unicode(
        "admin",
        config=True,
        help="""Lowest role that may start, stop and delete the members' studios of a workspace
        (private ones included; opening private studios is never granted).""",
    )

    sharing_api_token = Unicode(
        "",
        config=True,
        help="""Token of the sharing service (studio_spawner.sharing.sharing_role()): when a
        member's groups change, their shares on running shared studios follow at once.
        '' = they follow at each studio's next start. configure_workspace_sharing(c) sets it.""",
    )

    _file_cache: tuple[tuple[int, int], dict[str, dict[str, str]]] | None = None
    # A first login's groups wait here until the hub has created the user (add_user).
    _first_logins: dict[str, tuple[str, list[str]]]

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("manage_roles")
    def _default_manage_roles(self) -> bool:
        return True

    @default("auth_refresh_age")
    def _default_auth_refresh_age(self) -> int:
        """Membership changes reach running studios at the next refresh: 60 s, not 300."""
        return 60

    @validate("workspaces")
    def _check_workspaces(self, proposal: dict) -> dict:
        try:
            return parse_members(proposal["value"], f"{SETTING}.workspaces")
        except WorkspaceConfigError as error:
            raise TraitError(str(error)) from None

    @validate("manager_min_role")
    def _check_manager_role(self, proposal: dict) -> str:
        try:
            return check_role(proposal["value"], f"{SETTING}.manager_min_role")
        except WorkspaceConfigError as error:
            raise TraitError(str(error)) from None

    @validate("claim_pattern", "claim_roles")
    def _check_claims(self, proposal: dict) -> Any:
        pattern, roles = self.claim_pattern, self.claim_roles
        if proposal["trait"].name == "claim_pattern":
            pattern = proposal["value"]
        else:
            roles = proposal["value"]
        try:
            self._claims(pattern, roles)
        except WorkspaceConfigError as error:
            raise TraitError(str(error)) from None
        return proposal["value"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._first_logins = {}
        for setting in ("manage_groups", "manage_roles"):
            if not getattr(self, setting):
                raise ValueError(
                    f"Authenticator.{setting} is False, but {SETTING} sets the users' groups and "
                    f"roles: remove the setting or set it to True"
                )
        self.file_members()  # a missing or broken file stops the hub with the reason

    @staticmethod
    def _claims(pattern: str, roles: dict[str, str]) -> ClaimMapping:
        return ClaimMapping.build(
            pattern, roles, (f"{SETTING}.claim_pattern", f"{SETTING}.claim_roles")
        )

    # --- membership ------------------------------------------------------------------------

    def file_members(self) -> dict[str, dict[str, str]]:
        """The workspaces_file's members; re-read only when its size or mtime changed."""
        if not self.workspaces_file:
            return {}
        path = Path(self.workspaces_file)
        setting = f"{SETTING}.workspaces_file ({path})"
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if self._file_cache and self._file_cache[0] == key:
                return self._file_cache[1]
            members = parse_members(yaml.safe_load(path.read_text()) or {}, setting)
        except (OSError, yaml.YAMLError, WorkspaceConfigError) as error:
            message = str(error) if isinstance(error, WorkspaceConfigError) else (
                f"{setting}: cannot read it: {error}")
            if self._file_cache is None:
                raise WorkspaceConfigError(message) from None
            self.log.error("%s; keeping its last valid content", message)
            return self._file_cache[1]
        self._file_cache = (key, members)
        return members

    def memberships(self, name: str, groups: list[str]) -> dict[str, str]:
        """The user's role per workspace, from the settings, the file and claim groups."""
        configured = merge(self.workspaces, self.file_members())
        normalized = {
            workspace: {self.normalize_username(user): role for user, role in users.items()}
            for workspace, users in configured.items()
        }
        claims, ignored = self._claims(self.claim_pattern, self.claim_roles).memberships(groups)
        if ignored:
            self.log.warning(
                "Groups %s of %s match %s.claim_pattern but name no valid workspace and role "
                "(see %s.claim_roles)", ignored, name, SETTING, SETTING,
            )
        return merge(roles_of(normalized, name), claims)

    def add_workspaces(
        self, model: dict[str, Any], groups: list[str], roles: list[Any], admin: bool
    ) -> dict[str, Any]:
        """The auth model with workspace groups and managed roles added to the base ones."""
        roles = [{"name": r} if isinstance(r, str) else r for r in roles]  # names or dicts
        memberships = self.memberships(model["name"], groups)
        base_groups = {g for g in groups if not is_workspace_group(g)}
        managed = [
            {"name": manager_role_name(ws), "scopes": manager_scopes(ws),
             "description": f"Start, stop and delete the studios of workspace {ws}'s members"}
            for ws, role in sorted(memberships.items())
            if at_least(role, self.manager_min_role)
        ]
        ours = {r["name"] for r in managed} | set(DEFAULT_ROLES)
        kept = [r for r in roles if r["name"] not in ours and not _is_manager_role(r["name"])]
        # The default roles keep their scopes (given back as they are, to avoid a warning).
        current = {r["name"]: r for r in roles if r["name"] in DEFAULT_ROLES}
        defaults = [current.get(name, {"name": name})
                    for name in DEFAULT_ROLES if name == "user" or admin]
        return {
            **model,
            "groups": sorted(base_groups | set(groups_for(memberships))),
            "roles": defaults + kept + managed,
        }

    # --- the authenticator hooks -----------------------------------------------------------

    async def follow_shares(self, api_url: str, name: str, old: list[str], new: list[str]) -> None:
        """Make the member's studio shares follow their group changes (see sharing.py)."""
        if not self.sharing_api_token or sorted(old) == sorted(new):
            return
        try:
            async with HubShares(api_url, self.sharing_api_token) as hub:
                await hub.follow_member(name, old, new)
        except HubAPIError as error:
            raise sharing_error(error, f"{SETTING}.sharing_api_token") from error

    async def run_post_auth_hook(self, handler: Any, authentication: dict) -> dict | None:
        """At login: the base's result plus workspace groups and roles."""
        authentication = await super().run_post_auth_hook(handler, authentication)
        if not authentication:
            return authentication
        existing = handler.find_user(authentication["name"]) if handler is not None else None
        admin = authentication.get("admin")
        if admin is None:
            admin = bool(existing and existing.admin)
        roles = authentication.get("roles")
        if roles is None:
            roles = _roles_of(existing) if existing else []
        model = self.add_workspaces(
            authentication, list(authentication.get("groups") or []), list(roles), bool(admin)
        )
        if handler is None:
            return model
        if existing is None:  # shares need the user to exist: see add_user
            self._first_logins[model["name"]] = (handler.hub.api_url, model["groups"])
        else:
            old = [group.name for group in existing.groups]
            await self.follow_shares(handler.hub.api_url, model["name"], old, model["groups"])
        return model

    async def add_user(self, user: Any) -> None:
        """After the hub creates a user at their first login, share their studios with them."""
        await maybe_future(super().add_user(user))
        first = self._first_logins.pop(user.name, None)
        if first:
            await self.follow_shares(first[0], user.name, [], first[1])

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict:
        """At each auth refresh: re-read membership so joins, leaves and role changes apply."""
        refreshed = await maybe_future(super().refresh_user(user, handler))
        if not refreshed:
            return refreshed
        model = {"name": user.name} if refreshed is True else dict(refreshed)
        groups = model.get("groups")
        if groups is None:
            groups = [group.name for group in user.groups]
        roles = model.get("roles")
        if roles is None:
            roles = _roles_of(user)
        admin = model.get("admin")
        model = self.add_workspaces(
            model, list(groups), list(roles), bool(user.admin if admin is None else admin)
        )
        if handler is not None:
            await self.follow_shares(handler.hub.api_url, user.name,
                                     [g.name for g in user.groups], model["groups"])
        return model


def _roles_of(user: Any) -> list[dict[str, Any]]:
    """A hub user's current roles as role dicts (name and scopes)."""
    return [{"name": role.name, "scopes": list(role.scopes)} for role in user.roles]


def _is_manager_role(name: str) -> bool:
    return name.startswith("workspace-") and name.endswith("-managers")


def with_workspaces(base: type[Authenticator]) -> type[Authenticator]:
    """A subclass of `base` with workspace membership, e.g. with_workspaces(GenericOAuthenticator).

    Its settings are ``c.WorkspaceAuthenticator.*`` plus the base's own.
    """
    return type(f"Workspace{base.__name__}", (WorkspaceAuthenticator, base),
                {"__doc__": f"{base.__name__} with workspace groups and roles."})


class WorkspaceDummyAuthenticator(WorkspaceAuthenticator, DummyAuthenticator):
    """DummyAuthenticator with workspace groups and roles, for trials and tests."""
