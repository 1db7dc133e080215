"""GenericOAuthenticator with workspaces on a real hub: IdP groups become workspace groups
and roles at each login (the identity provider is a stand-in, see identity_provider.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from .hub_fixtures import Hub, start_hub
from .identity_provider import IdentityProvider


@pytest.fixture(scope="module")
def provider() -> Iterator[IdentityProvider]:
    idp = IdentityProvider()
    yield idp
    idp.close()


@pytest.fixture(scope="module")
def oauth_hub(provider, tmp_path_factory) -> Iterator[Hub]:
    config = f"""
from oauthenticator.generic import GenericOAuthenticator
from studio_spawner.auth import with_workspaces
c.JupyterHub.authenticator_class = with_workspaces(GenericOAuthenticator)
c.GenericOAuthenticator.client_id = "jupyterhub"
c.GenericOAuthenticator.client_secret = "secret"
c.GenericOAuthenticator.oauth_callback_url = c.JupyterHub.bind_url + "/hub/oauth_callback"
c.GenericOAuthenticator.authorize_url = "{provider.url}/authorize"
c.GenericOAuthenticator.token_url = "{provider.url}/token"
c.GenericOAuthenticator.userdata_url = "{provider.url}/userinfo"
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
c.GenericOAuthenticator.allow_all = True
c.WorkspaceAuthenticator.claim_pattern = r"(?P<workspace>[a-z0-9-]+):(?P<role>[a-z]+)"
c.WorkspaceAuthenticator.claim_roles = {{"members": "launch", "readers": "view"}}
c.WorkspaceAuthenticator.workspaces = {{"proteomics": {{"zoe": "connect"}}}}
"""
    yield from start_hub(tmp_path_factory.mktemp("oauth-hub"), config)


def log_in(hub: Hub) -> requests.Response:
    """The browser's path: /hub/oauth_login, the provider, the hub's callback."""
    session = requests.Session()
    response = session.get(f"{hub.url}/hub/oauth_login", timeout=30)
    assert response.ok, response.text
    return response


def user_model(hub: Hub, name: str) -> dict:
    response = hub.api("GET", f"/users/{name}")
    assert response.ok, response.text
    return response.json()


def test_idp_groups_become_workspace_groups_and_roles(oauth_hub, provider):
    provider.sign_in_as("zoe", ["genomics:admin", "genomics:wizard", "unrelated"])
    log_in(oauth_hub)
    zoe = user_model(oauth_hub, "zoe")
    groups = set(zoe["groups"])
    assert {"workspace:genomics:admin", "workspace:genomics:launch",
            "workspace:genomics:view"} <= groups
    assert "workspace:genomics:owner" not in groups
    assert "workspace:proteomics:connect" in groups, "configured members add to the claims"
    assert "unrelated" in groups and "genomics:wizard" in groups, "the IdP's own groups stay"
    assert "workspace-genomics-managers" in zoe["roles"] and "user" in zoe["roles"]
    assert "workspace-proteomics-managers" not in zoe["roles"]


def test_a_later_login_follows_the_idp(oauth_hub, provider):
    provider.sign_in_as("yan", ["genomics:admin"])
    log_in(oauth_hub)
    assert "workspace-genomics-managers" in user_model(oauth_hub, "yan")["roles"]
    provider.sign_in_as("yan", ["genomics:readers"])
    log_in(oauth_hub)
    yan = user_model(oauth_hub, "yan")
    assert [g for g in yan["groups"] if g.startswith("workspace:")] == ["workspace:genomics:view"]
    assert yan["roles"] == ["user"]
