"""WorkspaceAuthenticator on real JupyterHub authenticators (login and refresh, no hub)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from jupyterhub.auth import Authenticator
from traitlets import TraitError

from studio_spawner.auth import WorkspaceDummyAuthenticator, with_workspaces
from studio_spawner.workspaces import WorkspaceConfigError

MANAGERS = "workspace-genomics-managers"


class ClaimsAuthenticator(Authenticator):
    """Stands for an identity provider: returns the groups its users have."""

    claims = {"ann": ["genomics:admins", "staff"], "ben": ["lab:member"]}

    async def authenticate(self, handler, data):
        return {"name": data["username"], "groups": self.claims.get(data["username"], []),
                "roles": ["course-helper"]}


@dataclass
class Named:
    name: str
    scopes: list[str] = field(default_factory=list)


@dataclass
class HubUser:
    """The parts of the hub's User that refresh_user reads."""

    name: str
    groups: list[Named]
    roles: list[Named]
    admin: bool = False


async def login(authenticator, name):
    return await authenticator.get_authenticated_user(None, {"username": name, "password": "x"})


def role_names(model):
    return [role["name"] for role in model["roles"]]


async def test_login_sets_groups_and_keeps_the_user_role():
    auth = WorkspaceDummyAuthenticator(
        workspaces={"genomics": {"Ann": "admin", "ben": "connect"}}, admin_users={"ben"})
    ann = await login(auth, "ann")  # user names in the settings are normalized too
    assert "workspace:genomics:launch" in ann["groups"]
    assert role_names(ann) == ["user", MANAGERS]
    manager = ann["roles"][1]
    assert "servers!group=workspace:genomics:view" in manager["scopes"]
    ben = await login(auth, "ben")
    assert ben["groups"] == ["workspace:genomics:connect", "workspace:genomics:view"]
    assert role_names(ben) == ["user", "admin"]  # a hub admin keeps the admin role
    nobody = await login(auth, "zed")
    assert (nobody["groups"], role_names(nobody)) == ([], ["user"])


async def test_identity_provider_groups_map_through_the_claim_pattern():
    auth = with_workspaces(ClaimsAuthenticator)(
        claim_pattern=r"(?P<workspace>[a-z]+):(?P<role>[a-z]+)",
        claim_roles={"admins": "admin", "member": "launch"},
        workspaces={"genomics": {"ann": "view"}}, allow_all=True,
    )
    ann = await login(auth, "ann")
    assert "staff" in ann["groups"] and "genomics:admins" in ann["groups"]  # kept as they are
    assert "workspace:genomics:admin" in ann["groups"]  # the claim's role beats the setting's
    assert role_names(ann) == ["user", "course-helper", MANAGERS]  # the base's roles are kept
    ben = await login(auth, "ben")
    assert "workspace:lab:launch" in ben["groups"]
    assert type(auth).__name__ == "WorkspaceClaimsAuthenticator"


async def test_refresh_rereads_the_file_and_keeps_other_groups_and_roles(tmp_path: Path):
    members = tmp_path / "ws.yaml"
    members.write_text(yaml.safe_dump({"genomics": {"ann": "admin"}}))
    auth = WorkspaceDummyAuthenticator(workspaces_file=str(members))
    first = await login(auth, "ann")
    user = HubUser("ann", [Named(g) for g in [*first["groups"], "staff"]],
                   [Named("user", ["self"]), Named(MANAGERS), Named("course-helper")])

    members.write_text(yaml.safe_dump({"genomics": {"ann": "connect", "ben": "view"}}))
    refreshed = await auth.refresh_user(user)
    assert refreshed["groups"] == ["staff", "workspace:genomics:connect",
                                   "workspace:genomics:view"]
    assert role_names(refreshed) == ["user", "course-helper"]  # no longer a manager
    assert refreshed["roles"][0] == {"name": "user", "scopes": ["self"]}

    members.write_text("genomics: {ann: [broken")  # a bad edit keeps the last valid content
    again = await auth.refresh_user(user)
    assert again["groups"] == refreshed["groups"]


def test_a_missing_or_invalid_file_stops_the_hub_with_the_setting(tmp_path: Path):
    with pytest.raises(WorkspaceConfigError, match="WorkspaceAuthenticator.workspaces_file"):
        WorkspaceDummyAuthenticator(workspaces_file=str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"genomics": {"ann": "superuser"}}))
    with pytest.raises(WorkspaceConfigError, match=re.escape(
            f"WorkspaceAuthenticator.workspaces_file ({bad})['genomics']['ann']: 'superuser'")):
        WorkspaceDummyAuthenticator(workspaces_file=str(bad))


@pytest.mark.parametrize(("settings", "message"), [
    ({"workspaces": {"genomics": {"ann": "boss"}}},
     "WorkspaceAuthenticator.workspaces['genomics']['ann']: 'boss' is not a role"),
    ({"manager_min_role": "root"}, "WorkspaceAuthenticator.manager_min_role: 'root'"),
    ({"claim_pattern": "(?P<workspace>.+)"},
     "WorkspaceAuthenticator.claim_pattern: add the named group(s) role"),
    ({"claim_roles": {"admins": "king"}}, "WorkspaceAuthenticator.claim_roles['admins']"),
])
def test_settings_are_checked_when_set(settings, message):
    with pytest.raises(TraitError, match=re.escape(message)):
        WorkspaceDummyAuthenticator(**settings)


def test_membership_is_refreshed_every_minute_by_default():
    assert WorkspaceDummyAuthenticator().auth_refresh_age == 60
    assert WorkspaceDummyAuthenticator(auth_refresh_age=5).auth_refresh_age == 5


def test_groups_and_roles_must_stay_managed():
    with pytest.raises(ValueError, match="Authenticator.manage_groups is False"):
        WorkspaceDummyAuthenticator(manage_groups=False)
