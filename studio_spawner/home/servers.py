"""The hub's database side of the studio home: which servers a view lists, who may do what,
and saving or forgetting a named server. Reads JupyterHub's ORM directly (one query per view).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jupyterhub import orm
from jupyterhub.scopes import Scope
from sqlalchemy import or_

from ..studio_status import LastFailure
from ..workspaces import WORKSPACE_NAME, group_name, manager_role_name

SERVER_NAME_MAX = 30  # JupyterHub 6's rule for named servers
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_MANAGER_ROLE = re.compile(r"workspace-(.+)-managers")  # workspaces.manager_role_name

VIEWS = ("mine", "shared", "workspace", "all")


def server_name_for(display_name: str, taken: Iterable[str]) -> str:
    """A named-server name derived from the studio's display name, unique among ``taken``.

    1–30 lowercase letters, digits and single hyphens, starting with a letter (JupyterHub 6's
    rule, also valid on 5.5): "RNA-seq: QC (v2)" becomes "rna-seq-qc-v2".
    """
    ascii_name = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    base = _NOT_NAME.sub("-", ascii_name.lower()).strip("-")
    base = re.sub(r"^[^a-z]+", "", base) or "studio"
    base = base[:SERVER_NAME_MAX].rstrip("-")
    taken = set(taken)
    name, number = base, 1
    while name in taken:
        number += 1
        suffix = f"-{number}"
        name = base[: SERVER_NAME_MAX - len(suffix)].rstrip("-") + suffix
    return name


@dataclass(frozen=True)
class Permissions:
    """What the signed-in user may do to one studio (from their JupyterHub scopes)."""

    open: bool
    manage: bool  # start, stop, delete
    edit: bool  # change the options: the owner, or a hub admin
    extend: bool  # the owner, or a hub admin


def _allows(parsed: Mapping[str, Any], scope: str, owner: orm.User, server: str) -> bool:
    filters = parsed.get(scope)
    if filters is None:
        return False
    if filters == Scope.ALL:
        return True
    return (owner.name in filters.get("user", ())
            or f"{owner.name}/{server}" in filters.get("server", ())
            or any(group.name in filters.get("group", ()) for group in owner.groups))


def permissions(parsed: Mapping[str, Any], me: str, owner: orm.User, server: str) -> Permissions:
    """The signed-in user's rights on ``owner``'s studio ``server``."""
    admin = parsed.get("admin:servers") == Scope.ALL
    mine = owner.name == me
    return Permissions(
        open=_allows(parsed, "access:servers", owner, server),
        manage=_allows(parsed, "servers", owner, server),
        edit=mine or admin,
        extend=mine or admin,
    )


def managed_workspaces(role_names: Iterable[str]) -> list[str]:
    """The workspaces whose managers' role (``workspace-<ws>-managers``) the user has."""
    roles = set(role_names)
    found = {m.group(1) for r in roles if (m := _MANAGER_ROLE.fullmatch(r))}
    return sorted(ws for ws in found if WORKSPACE_NAME.fullmatch(ws)
                  and manager_role_name(ws) in roles)


def spawners_for_view(db: Any, me: orm.User, view: str, *,
                      workspaces: Iterable[str] = ()) -> list[orm.Spawner]:
    """The servers a view lists (not yet filtered by permissions): the named ones, and a
    default server in use (running, or with saved options or a failure)."""
    query = db.query(orm.Spawner).join(orm.User)
    if view == "mine":
        query = query.filter(orm.Spawner.user_id == me.id)
    elif view == "shared":
        group_ids = [group.id for group in me.groups]
        shares = db.query(orm.Share.spawner_id).filter(
            or_(orm.Share.user_id == me.id, orm.Share.group_id.in_(group_ids)))
        query = query.filter(orm.Spawner.id.in_(shares), orm.Spawner.user_id != me.id)
    elif view == "workspace":
        groups = [group_name(ws, "view") for ws in workspaces]
        members = db.query(orm.User.id).join(orm.User.groups).filter(orm.Group.name.in_(groups))
        query = query.filter(orm.Spawner.user_id.in_(members))
        wanted = set(workspaces)
        return [s for s in query.order_by(orm.User.name, orm.Spawner.name)
                if (s.user_options or {}).get("workspace") in wanted and listed(s)]
    elif view != "all":
        raise ValueError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    return [s for s in query.order_by(orm.User.name, orm.Spawner.name) if listed(s)]


def listed(orm_spawner: orm.Spawner) -> bool:
    """A named server, or a default server in use: running or pending, or with saved options
    or a failure (JupyterHub makes an unused default server for everyone who signs in)."""
    return bool(orm_spawner.name or orm_spawner.server is not None or orm_spawner.user_options
                or LastFailure.from_state(orm_spawner.state))


def forget_server(user: Any, name: str, orm_spawner: orm.Spawner) -> bool:
    """Delete a named server that never ran and was never saved; True when it was deleted."""
    if user.orm_spawners.get(name) is not orm_spawner or orm_spawner.server is not None:
        return False
    db = user.db
    user.spawners.pop(name, None)
    db.delete(orm_spawner)
    db.commit()
    return True
