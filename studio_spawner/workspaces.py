"""Workspaces, member roles, and how they become JupyterHub groups and roles. Pure: no I/O.

A workspace has members with roles, ordered like Seqera's (lowest first):
view < connect < launch < maintain < admin < owner. A member is put in one JupyterHub group per
role at or below their own, named ``workspace:<workspace>:<role>``, so "members with the connect
role or above" is exactly the group ``workspace:genomics:connect``. Sharing, the launch check
and the managers' scopes all read these groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("view", "connect", "launch", "maintain", "admin", "owner")
LAUNCH_ROLE = "launch"
EVERYONE = "*"
GROUP_PREFIX = "workspace:"
WORKSPACE_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
USER_NAME = re.compile(r"[^\x00-\x20\x7f]{1,255}")
_GROUP = re.compile(
    rf"{re.escape(GROUP_PREFIX)}(?P<workspace>{WORKSPACE_NAME.pattern}):(?P<role>{'|'.join(ROLES)})"
)


class WorkspaceConfigError(ValueError):
    """A workspace setting is invalid; the message names the setting and the fix."""


def rank(role: str) -> int:
    """The position of a role in the order (view is 0)."""
    return ROLES.index(role)


def at_least(role: str, minimum: str) -> bool:
    return rank(role) >= rank(minimum)


def check_role(role: Any, where: str, allowed: Iterable[str] = ROLES) -> str:
    """Return the role, or raise naming `where` when it is not one of `allowed`."""
    allowed = tuple(allowed)
    if not isinstance(role, str) or role not in allowed:
        raise WorkspaceConfigError(
            f"{where}: {role!r} is not a role here; use one of {', '.join(allowed)}"
        )
    return role


def group_name(workspace: str, role: str) -> str:
    """The group of the workspace's members whose role is `role` or higher."""
    return f"{GROUP_PREFIX}{workspace}:{role}"


def is_workspace_group(name: str) -> bool:
    """Names under the reserved prefix belong to us, whatever follows."""
    return name.startswith(GROUP_PREFIX)


def manager_role_name(workspace: str) -> str:
    """The JupyterHub role of a workspace's managers (role names allow no ':')."""
    return f"workspace-{workspace}-managers"


def manager_scopes(workspace: str) -> list[str]:
    """Start, stop and delete the members' servers, and see the members; no access:servers."""
    members = group_name(workspace, ROLES[0])
    return [f"servers!group={members}", f"list:users!group={members}",
            f"read:users!group={members}"]


def groups_for(memberships: Mapping[str, str]) -> list[str]:
    """Every group a member belongs to: one per role at or below theirs, per workspace."""
    return sorted(
        group_name(workspace, role)
        for workspace, top in memberships.items()
        for role in ROLES[: rank(top) + 1]
    )


def parse_group(name: str) -> tuple[str, str] | None:
    """(workspace, role) of one of our groups; None for any other group."""
    match = _GROUP.fullmatch(name)
    return (match["workspace"], match["role"]) if match else None


def workspaces_with(group_names: Iterable[str], minimum: str) -> list[str]:
    """The workspaces in which the groups give a role of `minimum` or higher."""
    parsed = (parse_group(name) for name in group_names)
    return sorted({found[0] for found in parsed if found and found[1] == minimum})


def merge(*sources: Mapping[str, str]) -> dict[str, str]:
    """Combine memberships, keeping the highest role per workspace."""
    merged: dict[str, str] = {}
    for source in sources:
        for workspace, role in source.items():
            if workspace not in merged or at_least(role, merged[workspace]):
                merged[workspace] = role
    return merged


def parse_members(raw: Any, setting: str) -> dict[str, dict[str, str]]:
    """Validate ``{workspace: {user: role}}``; errors name `setting` and the entry."""
    if not isinstance(raw, Mapping):
        raise WorkspaceConfigError(f"{setting}: must be a mapping of workspace -> {{user: role}}")
    members: dict[str, dict[str, str]] = {}
    for workspace, users in raw.items():
        where = f"{setting}[{workspace!r}]"
        if not isinstance(workspace, str) or not WORKSPACE_NAME.fullmatch(workspace):
            raise WorkspaceConfigError(
                f"{where}: workspace names are 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        if not isinstance(users, Mapping):
            raise WorkspaceConfigError(f"{where}: must be a mapping of user name -> role")
        members[workspace] = {}
        for user, role in users.items():
            if not isinstance(user, str) or not USER_NAME.fullmatch(user):
                raise WorkspaceConfigError(
                    f"{where}: {user!r} is not a user name (1-255 characters, no spaces)"
                )
            members[workspace][user] = check_role(role, f"{where}[{user!r}]")
    return members


@dataclass(frozen=True)
class ClaimMapping:
    """Turns identity-provider groups such as ``genomics:admin`` into (workspace, role).

    `pattern` is a regular expression, fully matched against each group, with the named groups
    ``workspace`` and ``role``; `roles` renames the provider's role words to ours.
    """

    pattern: re.Pattern[str] | None = None
    roles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, pattern: str, roles: Mapping[str, Any], settings: tuple[str, str]
    ) -> ClaimMapping:
        """Validate; errors name the pattern's or the roles' setting (`settings`)."""
        setting, roles_setting = settings
        compiled = None
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                message = f"{setting}: not a regular expression: {error}"
                raise WorkspaceConfigError(message) from None
            missing = {"workspace", "role"} - set(compiled.groupindex)
            if missing:
                raise WorkspaceConfigError(
                    f"{setting}: add the named group(s) {', '.join(sorted(missing))}, e.g. "
                    r"'(?P<workspace>[a-z0-9-]+):(?P<role>[a-z]+)'"
                )
        for word, role in roles.items():
            check_role(role, f"{roles_setting}[{word!r}]")
        return cls(compiled, dict(roles))

    def memberships(self, groups: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """The memberships the groups grant, and the groups that matched but were unusable."""
        found: dict[str, str] = {}
        ignored: list[str] = []
        if self.pattern is None:
            return found, ignored
        for name in groups:
            match = self.pattern.fullmatch(name)
            if not match:
                continue
            workspace = match["workspace"]
            role = self.roles.get(match["role"], match["role"])
            if WORKSPACE_NAME.fullmatch(workspace or "") and role in ROLES:
                found = merge(found, {workspace: role})
            else:
                ignored.append(name)
        return found, ignored


def roles_of(members: Mapping[str, Mapping[str, str]], user: str) -> dict[str, str]:
    """A user's role in each configured workspace; the member "*" stands for every user."""
    found: dict[str, str] = {}
    for workspace, users in members.items():
        for name in (EVERYONE, user):
            if name in users:
                found = merge(found, {workspace: users[name]})
    return found
