"""Collaboration on a real hub: the access matrix, the private toggle, membership changes.

A JupyterHub with configurable-http-proxy spawns studios with StudioSpawner on the devcluster;
users log in with WorkspaceDummyAuthenticator and act over HTTP with their own login, as a
browser does: they open a studio through the hub's OAuth flow (confirming the authorize page
like a person would) and start, stop and delete through the REST API with their cookie.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml

from .hub_fixtures import Hub, open_as_browser, start_hub
from .studio_fixtures import studio_hub_config, wait_for_server
from .test_e2e_devcluster import JUPYTERHUB_6

REFRESH_SECONDS = 2  # Authenticator.auth_refresh_age
CACHE_SECONDS = 2  # StudioSpawner.server_auth_cache_seconds
MEMBERS = {
    "genomics": {"ann": "launch", "ben": "launch", "cal": "connect", "dee": "view",
                 "eve": "admin", "fay": "owner", "lee": "connect", "rob": "connect"},
    "proteomics": {"ann": "launch", "pat": "launch"},
}
OWNER = "ann"
STUDIOS = {"private": True, "shared": False}  # server name -> the private toggle
# Who can open each studio with their own login: the matrix's rows, plus the workspace's owner
# role and the hub's built-in admin (its role includes access:servers).
OPENS = {
    "ann": {"private", "shared"},  # the studio's owner
    "ben": {"shared"},  # a launch member
    "cal": {"shared"},  # a connect member
    "dee": set(),  # a view member
    "eve": {"shared"},  # a workspace admin
    "fay": {"shared"},  # the workspace's owner
    "pat": set(),  # a member of another workspace
    "oz": set(),  # an outsider
    "admin": {"private", "shared"},  # the hub admin
}
MANAGERS = {"ann", "eve"}  # who may start, stop and delete; the rest are refused
MATRIX_USERS = ["ann", "ben", "cal", "dee", "eve", "pat", "oz"]


class Browser:
    """One user's logged-in session: opens studios and calls the REST API with the cookie."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub, self.name = hub, name
        self.session = hub.login(name)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        xsrf = self.session.cookies.get("_xsrf", path="/hub/") or ""
        return self.session.request(method, f"{self.hub.url}/hub/api{path}", timeout=30,
                                    headers={"X-XSRFToken": xsrf}, **kwargs)

    def status(self, owner: str, server: str) -> int:
        """The studio's /api/status with the cookie this browser already has."""
        url = f"{self.hub.url}/user/{owner}/{server}/api/status"
        response = self.session.get(url, timeout=30)
        assert response.status_code != 200 or "started" in response.json(), response.text
        return response.status_code

    def opens(self, owner: str, server: str) -> bool:
        """Go through the OAuth flow as a browser (confirming the authorize page) and report
        whether the studio answers."""
        open_as_browser(self.session, f"{self.hub.url}/user/{owner}/{server}/files/")
        return self.status(owner, server) == 200


def server(hub: Hub, user: str, name: str) -> dict | None:
    """The server's model through the admin API (stopped ones too), None when it is deleted."""
    response = hub.api("GET", f"/users/{user}?include_stopped_servers=1")
    return response.json()["servers"].get(name)


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> float:
    """Poll `check` until true; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what}")


def running(hub: Hub, name: str) -> bool:
    model = server(hub, OWNER, name)
    return bool(model and model.get("ready") and not model.get("pending"))


def stopped(hub: Hub, name: str) -> bool:
    model = server(hub, OWNER, name)
    return model is not None and not model.get("ready") and not model.get("pending")


def options(name: str, private: bool, workspace: str = "genomics") -> dict:
    return {"name": f"RNA {name}", "template": "demo", "private": private,
            "workspace": workspace}


@pytest.fixture(scope="module")
def members_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("members") / "workspaces.yaml"
    path.write_text(yaml.safe_dump(MEMBERS))
    return path


@pytest.fixture(scope="module")
def hub(devcluster, members_file, tmp_path_factory) -> Iterator[Hub]:
    config = studio_hub_config(devcluster) + f"""
from studio_spawner.sharing import configure_workspace_sharing
c.JupyterHub.authenticator_class = "studio_spawner.auth.WorkspaceDummyAuthenticator"
c.WorkspaceAuthenticator.workspaces_file = "{members_file}"
c.Authenticator.auth_refresh_age = {REFRESH_SECONDS}
c.StudioSpawner.server_auth_cache_seconds = {CACHE_SECONDS}
configure_workspace_sharing(c)
"""
    env = {"KUBECONFIG": str(devcluster.kubeconfig)}
    yield from start_hub(tmp_path_factory.mktemp("collab-hub"), config, env=env)


@pytest.fixture(scope="module")
def browsers(hub) -> dict[str, Browser]:
    return {name: Browser(hub, name) for name in [*OPENS, "lee", "rob"]}


@pytest.fixture(scope="module")
def studios(hub, browsers) -> dict[str, bool]:
    """ann's two genomics studios, running: 'private' and 'shared'."""
    for name, private in STUDIOS.items():
        response = browsers[OWNER].api("POST", f"/users/{OWNER}/servers/{name}",
                                       json=options(name, private))
        assert response.status_code in (201, 202), response.text
    for name in STUDIOS:
        model = wait_for_server(hub, OWNER, name)
        assert model.get("ready"), f"{name}: {model}\n{hub.log.read_text()[-3000:]}"
    return STUDIOS


def set_members(members_file: Path, workspace: str, user: str, role: str | None) -> None:
    members = yaml.safe_load(members_file.read_text())
    if role is None:
        members[workspace].pop(user, None)
    else:
        members[workspace][user] = role
    members_file.write_text(yaml.safe_dump(members))


# --- who may launch where --------------------------------------------------------------------


def test_form_offers_each_workspace_where_the_user_may_launch(hub, browsers):
    page = browsers[OWNER].session.get(f"{hub.url}/hub/spawn/{OWNER}/newstudio", timeout=30)
    assert page.status_code == 200
    assert 'name="workspace"' in page.text
    assert '<option value="genomics"' in page.text
    assert '<option value="proteomics"' in page.text


@pytest.mark.parametrize(("user", "body", "message"), [
    ("ann", {"name": "x", "template": "demo"}, "workspace: choose the studio's workspace: "
                                               "genomics, proteomics"),
    ("ann", {"name": "x", "template": "demo", "workspace": "metabolomics"},
     "workspace: you cannot launch in this workspace; yours: genomics, proteomics"),
    ("cal", {"name": "x", "template": "demo"}, "workspace: you have no workspace where you may "
                                               "launch studios"),
    ("dee", {"name": "x", "template": "demo"}, "workspace: you have no workspace"),
    ("oz", {"name": "x", "template": "demo"}, "workspace: you have no workspace"),
    ("pat", {"name": "x", "template": "demo", "workspace": "genomics"},
     "workspace: you cannot launch in this workspace; yours: proteomics"),
])
def test_launch_needs_the_launch_role_in_the_studios_workspace(hub, browsers, user, body,
                                                               message):
    response = browsers[user].api("POST", f"/users/{user}/servers/refused", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert not (server(hub, user, "refused") or {}).get("ready")


# --- the matrix: open ------------------------------------------------------------------------


@pytest.mark.parametrize("user", list(OPENS))
@pytest.mark.parametrize("name", list(STUDIOS))
def test_open_with_own_login(studios, browsers, name, user):
    assert browsers[user].opens(OWNER, name) == (name in OPENS[user])


# --- membership changes while a shared studio runs ----------------------------------------------


def test_a_removed_member_loses_access_to_a_running_studio(studios, browsers, members_file):
    lee = browsers["lee"]
    assert lee.opens(OWNER, "shared")
    set_members(members_file, "genomics", "lee", None)
    seconds = wait_until(lambda: lee.status(OWNER, "shared") == 403, 30, "lee loses access")
    print(f"\nremoved member lost access after {seconds:.1f} s "
          f"(auth_refresh_age {REFRESH_SECONDS} s, server auth cache {CACHE_SECONDS} s)")
    assert seconds <= REFRESH_SECONDS + CACHE_SECONDS + 5
    assert not lee.opens(OWNER, "shared"), "logging in again through OAuth does not help"


def test_role_changes_apply_to_a_running_studio(studios, browsers, members_file):
    rob = browsers["rob"]
    assert rob.opens(OWNER, "shared")
    set_members(members_file, "genomics", "rob", "view")  # below connect: no access
    wait_until(lambda: rob.status(OWNER, "shared") == 403, 30, "rob, now view, loses access")
    set_members(members_file, "genomics", "rob", "launch")
    wait_until(lambda: rob.opens(OWNER, "shared"), 30, "rob, now launch, gets access back")


def test_a_new_member_gets_access_to_a_running_studio(studios, browsers, members_file):
    oz = browsers["oz"]
    assert not oz.opens(OWNER, "shared")
    set_members(members_file, "genomics", "oz", "connect")
    try:
        wait_until(lambda: oz.opens(OWNER, "shared"), 30, "oz joins and can open")
        assert not oz.opens(OWNER, "private")
    finally:
        set_members(members_file, "genomics", "oz", None)
    wait_until(lambda: oz.status(OWNER, "shared") == 403, 30, "oz leaves again")


def test_a_first_login_gets_access_to_running_shared_studios(hub, studios, members_file):
    set_members(members_file, "genomics", "nia", "connect")
    nia = Browser(hub, "nia")  # the hub creates nia at this login
    assert nia.opens(OWNER, "shared")
    assert not nia.opens(OWNER, "private")


# --- the private toggle -----------------------------------------------------------------------


def restart(hub: Hub, browser: Browser, name: str, body: dict | None = None) -> None:
    assert browser.api("DELETE", f"/users/{OWNER}/servers/{name}").status_code in (202, 204)
    wait_until(lambda: stopped(hub, name), 60, f"{name} stops")
    response = browser.api("POST", f"/users/{OWNER}/servers/{name}", json=body)
    assert response.status_code in (201, 202), response.text
    assert wait_for_server(hub, OWNER, name).get("ready")


def test_the_private_toggle_takes_effect_at_the_next_start(hub, studios, browsers):
    cal, ann = browsers["cal"], browsers[OWNER]
    assert cal.opens(OWNER, "shared")
    restart(hub, ann, "shared", options("shared", private=True))
    assert not cal.opens(OWNER, "shared")
    assert ann.opens(OWNER, "shared")
    restart(hub, ann, "shared", options("shared", private=False))
    assert cal.opens(OWNER, "shared")


# --- the matrix: start, stop, delete ----------------------------------------------------------


def attempt(hub: Hub, browser: Browser, action: str, name: str) -> str:
    """Try an action; 'allowed' when it happened, 'refused' when refused and nothing changed."""
    before = server(hub, OWNER, name)
    path = f"/users/{OWNER}/servers/{name}"
    if action == "start":
        response = browser.api("POST", path)
    else:
        response = browser.api("DELETE", path, json={"remove": action == "delete"})
    if response.status_code in (403, 404):
        after = server(hub, OWNER, name)
        same = (before or {}).get("ready") == (after or {}).get("ready") and (
            (before is None) == (after is None))
        return "refused" if same else f"refused with {response.status_code} but changed"
    if response.status_code >= 300:
        return f"failed: {response.status_code} {response.text}"
    happened = {
        "start": lambda: running(hub, name),
        "stop": lambda: stopped(hub, name),
        "delete": lambda: server(hub, OWNER, name) is None,
    }[action]
    try:
        wait_until(happened, 90, f"{action} of {name}")
    except AssertionError:
        return f"accepted ({response.status_code}) but did not happen"
    return "allowed"


@pytest.mark.parametrize("name", list(STUDIOS))
def test_start_stop_delete(hub, studios, browsers, name):
    """Every user tries each action in a state where it would do something."""
    outcome: dict[tuple[str, str], str] = {}
    others = [u for u in MATRIX_USERS if u not in MANAGERS]

    def each(action: str, users: list[str]) -> None:
        for user in users:
            outcome[(user, action)] = attempt(hub, browsers[user], action, name)

    each("stop", others)  # running
    each("stop", ["eve"])
    each("start", others)  # stopped
    each("start", ["eve"])
    each("stop", ["ann"])
    each("start", ["ann"])
    each("delete", others)  # running
    each("delete", ["eve"])
    response = browsers[OWNER].api("POST", f"/users/{OWNER}/servers/{name}",
                                   json=options(name, STUDIOS[name]))
    assert response.status_code in (201, 202), response.text
    assert wait_for_server(hub, OWNER, name).get("ready")
    each("delete", ["ann"])

    expected = {
        (user, action): "allowed" if user in MANAGERS else "refused"
        for user in MATRIX_USERS for action in ("start", "stop", "delete")
    }
    assert outcome == expected


def test_a_workspace_admin_cannot_change_a_studios_options(hub, browsers):
    """eve (admin) may start ann's private studio as saved, never re-shared or re-scripted."""
    ann, eve, cal = browsers[OWNER], browsers["eve"], browsers["cal"]
    name = "guarded"
    assert ann.api("POST", f"/users/{OWNER}/servers/{name}",
                   json=options(name, private=True)).status_code in (201, 202)
    assert wait_for_server(hub, OWNER, name).get("ready")
    assert eve.api("DELETE", f"/users/{OWNER}/servers/{name}").status_code in (202, 204)
    wait_until(lambda: stopped(hub, name), 60, "stopped by the workspace admin")

    saved = server(hub, OWNER, name)["user_options"]
    assert saved["private"] is True and saved["name"] == f"RNA {name}"
    changed = {**options(name, private=False), "init_script": "echo changed"}
    for body in (changed, {**changed, "disk_gib": "not a number"}):  # valid, and invalid
        response = eve.api("POST", f"/users/{OWNER}/servers/{name}", json=body)
        assert response.status_code == 403, response.text
        assert "Only the studio's owner can change its options" in response.json()["message"]
        assert server(hub, OWNER, name)["user_options"] == saved
    form = ann.session.get(f"{hub.url}/hub/spawn/{OWNER}/{name}", timeout=30).text
    assert "echo changed" not in form, "the owner's form is never pre-filled from eve's body"

    assert eve.api("POST", f"/users/{OWNER}/servers/{name}").status_code in (201, 202)
    assert wait_for_server(hub, OWNER, name).get("ready")
    assert not cal.opens(OWNER, name), "still private"
    assert not eve.opens(OWNER, name)
    assert ann.opens(OWNER, name)
    ann.api("DELETE", f"/users/{OWNER}/servers/{name}", json={"remove": True})


def test_workspace_managers_never_read_env_values_or_init_scripts(hub, browsers):
    ann, eve = browsers[OWNER], browsers["eve"]
    name = "secrets"
    body = {**options(name, private=False), "env": {"API_KEY": "s3cret-value"},
            "init_script": "echo s3cret-script > /dev/null"}
    assert ann.api("POST", f"/users/{OWNER}/servers/{name}", json=body).status_code in (201, 202)
    assert wait_for_server(hub, OWNER, name).get("ready")
    as_manager = eve.api("GET", f"/users/{OWNER}")
    assert as_manager.status_code == 200, as_manager.text
    assert name in as_manager.json()["servers"], "the manager sees the server"
    assert "s3cret" not in as_manager.text
    assert ann.api("DELETE", f"/users/{OWNER}/servers/{name}").status_code in (202, 204)
    wait_until(lambda: stopped(hub, name), 60, "stopped")  # the spawn form shows when stopped
    form = eve.session.get(f"{hub.url}/hub/spawn/{OWNER}/{name}", timeout=30).text
    assert "s3cret" not in form
    assert "s3cret-value" in ann.session.get(f"{hub.url}/hub/spawn/{OWNER}/{name}",
                                             timeout=30).text, "the owner's own form has them"
    ann.api("DELETE", f"/users/{OWNER}/servers/{name}", json={"remove": True})


@pytest.mark.skipif(not JUPYTERHUB_6, reason="PATCH is JupyterHub 6")
def test_a_workspace_admin_cannot_patch_a_studios_options(hub, browsers):
    ann, eve = browsers[OWNER], browsers["eve"]
    name = "patched"
    response = ann.api("PUT", f"/users/{OWNER}/servers/{name}",
                       json={"user_options": options(name, private=True)})
    assert response.status_code == 201, response.text
    saved = server(hub, OWNER, name)["user_options"]
    response = eve.api("PATCH", f"/users/{OWNER}/servers/{name}",
                       json={"user_options": options(name, private=False)})
    assert response.status_code == 403, response.text
    assert server(hub, OWNER, name)["user_options"] == saved
    ann.api("DELETE", f"/users/{OWNER}/servers/{name}", json={"remove": True})
