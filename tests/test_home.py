"""The studio home on a real JupyterHub (with configurable-http-proxy), over HTTP.

No pod starts here (the hub's kubeconfig points nowhere), so these cover what needs no pod:
the pages, Add, Edit, Duplicate, validation, the lifespan policy and a start that fails at
once (errored, with its reason kept). tests/test_home_browser.py runs studios on the devcluster.
"""

from __future__ import annotations

import re
import time

import pytest

from .hub_fixtures import Hub, start_hub

CONFIG = """
from studio_spawner.home import configure_studio_home
configure_studio_home(c)
c.JupyterHub.named_server_limit_per_user = 3
c.StudioSpawner.lifespan_max_hours = 24
c.StudioSpawner.lifespan_group_policies = {"gpu": {"max_hours": 48}}
c.StudioSpawner.allowed_registries = ["quay.io/*"]
c.KubeSpawner.start_timeout = 20
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from start_hub(tmp_path_factory.mktemp("home-hub"), CONFIG)


def xsrf(session) -> str:
    return session.cookies.get("_xsrf", path="/hub/") or session.cookies.get("_xsrf", "")


def post(hub: Hub, session, path: str, **fields):
    return session.post(f"{hub.url}/hub/{path}", data={"_xsrf": xsrf(session), **fields},
                        timeout=60, allow_redirects=False)


def all_servers(hub: Hub, user: str) -> dict:
    """The user's named servers in the hub's database, running or not."""
    servers = hub.api("GET", f"/users/{user}", params={"include_stopped_servers": "1"}
                      ).json()["servers"]
    return {name: model for name, model in servers.items() if name}


def test_login_lands_on_the_studio_home_in_the_hubs_look(hub):
    session = hub.login("ann")
    page = session.get(f"{hub.url}/hub/", timeout=30)
    assert page.url.endswith("/hub/studios"), page.url
    assert 'id="nav-studios"' in page.text and "navbar" in page.text
    assert "You have no studios yet" in page.text


def test_add_derives_the_server_name_and_saves_without_starting(hub):
    session = hub.login("ann")
    response = post(hub, session, "studios/new", name="RNA-seq: QC (v2)", description="QC",
                    environment_source="template", template="python", lifespan_hours="4",
                    action="add")
    assert response.status_code == 302, response.text
    assert response.headers["Location"].startswith("/hub/studios/ann/rna-seq-qc-v2")
    server = all_servers(hub, "ann")["rna-seq-qc-v2"]
    assert server["user_options"]["name"] == "RNA-seq: QC (v2)"
    assert server["user_options"]["lifespan_hours"] == 4
    assert not server["ready"] and server["pending"] is None
    page = session.get(f"{hub.url}/hub/studios", timeout=30).text
    row = page.split('data-server="rna-seq-qc-v2"', 1)[1].split("</tr>", 1)[0]
    assert "RNA-seq: QC (v2)" in row and 'data-status="stopped"' in row
    assert "Shared" in row and 'data-action="start"' in row and 'data-action="open"' not in row
    details = session.get(f"{hub.url}/hub/studios/ann/rna-seq-qc-v2", timeout=30).text
    assert "Configuration details" in details and "4 h" in details
    assert "quay.io/jupyter/scipy-notebook:1" in details
    # the same name again gets a new server name, never a clash
    post(hub, session, "studios/new", name="RNA-seq: QC (v2)", environment_source="template",
         template="python", action="add")
    assert "rna-seq-qc-v2-2" in all_servers(hub, "ann")
    hub.api("DELETE", "/users/ann/servers/rna-seq-qc-v2-2", json={"remove": True})


def test_invalid_new_studio_keeps_the_input_and_creates_nothing(hub):
    session = hub.login("ben")
    response = post(hub, session, "studios/new", name="Bad {x}", environment_source="custom",
                    image="Not An Image", lifespan_hours="99", action="add-and-start")
    assert response.status_code == 400
    assert re.search(r'data-field="lifespan_hours"><div[^>]*>[^<]*1 to 24 hours', response.text)
    assert re.search(r'data-field="image"><div[^>]*>[^<]*spaces', response.text)
    assert 'value="Bad {x}"' in response.text and "Not An Image" in response.text
    assert all_servers(hub, "ben") == {}


def test_an_empty_custom_image_is_marked_on_the_image_field(hub):
    session = hub.login("ben")
    response = post(hub, session, "studios/new", name="Custom", environment_source="custom",
                    image="", action="add")
    assert response.status_code == 400
    assert re.search(r'data-field="image"><div[^>]*>[^<]*choose a template or enter a custom image',
                     response.text)


def test_rejected_starts_leave_no_empty_studio(hub):
    hub.api("POST", "/users", json={"usernames": ["cal"]})
    refused = hub.api("POST", "/users/cal/servers/typo", json={"lifespan_hours": 0})
    assert refused.status_code == 400, refused.text
    session = hub.login("cal")
    url = f"{hub.url}/hub/spawn/cal/mistake"
    session.get(url, timeout=30)
    form = session.post(url, data={"_xsrf": xsrf(session), "name": "x", "lifespan_hours": "0"},
                        timeout=30)
    assert "lifespan_hours" in form.text
    deadline = time.monotonic() + 10
    while all_servers(hub, "cal") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert all_servers(hub, "cal") == {}, "refused first starts leave no server behind"


def test_a_saved_studio_survives_a_refused_start(hub):
    session = hub.login("dee")
    post(hub, session, "studios/new", name="Keep", environment_source="template",
         template="python", action="add")
    refused = hub.api("POST", "/users/dee/servers/keep", json={"lifespan_hours": 0})
    assert refused.status_code == 400
    time.sleep(1.5)
    assert "keep" in all_servers(hub, "dee")


def test_edit_changes_options_for_the_next_start_and_duplicate_copies_them(hub):
    session = hub.login("eve")
    post(hub, session, "studios/new", name="Original", environment_source="template",
         template="python", env="A=1", action="add")
    edit = session.get(f"{hub.url}/hub/studios/eve/original/edit", timeout=30)
    assert 'value="Original"' in edit.text and "A=1" in edit.text
    saved = post(hub, session, "studios/eve/original/edit", name="Original", private="true",
                 environment_source="template", template="python", env="A=2", action="save")
    assert saved.status_code == 302
    options = all_servers(hub, "eve")["original"]["user_options"]
    assert options["private"] is True
    assert "env" not in options, "env values stay in the spawner's state, not user_options"
    edit = session.get(f"{hub.url}/hub/studios/eve/original/edit", timeout=30)
    assert "A=2" in edit.text, "the owner's form shows the saved env values"
    flash = session.get(f"{hub.url}{saved.headers['Location']}", timeout=30).text
    assert "Saved Original" in flash and "takes effect" not in flash
    post(hub, session, "studios/eve/original/edit", name="Original", private="true",
         environment_source="template", template="python", env="A=2\nTOKEN=s3cret",
         init_script="echo hello-init", action="save")
    details = session.get(f"{hub.url}/hub/studios/eve/original", timeout=30).text
    variables = details.split("Environment variables", 1)[1].split("</tr>", 1)[0]
    assert "<code>A</code>" in variables and "<code>TOKEN</code>" in variables
    assert "s3cret" not in details, "names only: values may be secrets"
    assert "echo hello-init" in details.split("Init script", 1)[1].split("</tr>", 1)[0]
    admin = hub.login("admin").get(f"{hub.url}/hub/studios/eve/original", timeout=30).text
    for title in ("Environment variables", "Init script"):
        assert "hidden" in admin.split(title, 1)[1].split("</tr>", 1)[0], title
    assert "echo hello-init" not in admin
    copy = session.get(f"{hub.url}/hub/studios/new?from=eve/original", timeout=30)
    assert 'value="Copy of Original"' in copy.text and "A=2" in copy.text
    other = hub.login("oz")
    assert other.get(f"{hub.url}/hub/studios/eve/original", timeout=30).status_code == 404
    assert other.get(f"{hub.url}/hub/studios/new?from=eve/original",
                     timeout=30).status_code == 404
    refused = post(hub, other, "studios/eve/original/edit", name="Mine now",
                   environment_source="template", template="python", action="save")
    assert refused.status_code == 404
    assert all_servers(hub, "eve")["original"]["user_options"]["name"] == "Original"


def test_the_limit_of_studios_is_a_message_on_the_form(hub):
    session = hub.login("fay")
    for n in range(3):
        post(hub, session, "studios/new", name=f"S{n}", environment_source="template",
             template="python", action="add")
    response = post(hub, session, "studios/new", name="One too many",
                    environment_source="template", template="python", action="add")
    assert response.status_code == 400
    banner = response.text.split("studio-summary", 1)[1].split("</div>", 1)[0]
    assert "3 studios, the most allowed" in banner, "a banner, not an error on Name"
    assert "data-field=" not in response.text
    assert len(all_servers(hub, "fay")) == 3


def test_a_start_that_fails_at_once_shows_errored_with_the_reason(hub):
    session = hub.login("gil")
    response = post(hub, session, "studios/new", name="Doomed", environment_source="template",
                    template="python", action="add-and-start")
    assert response.status_code == 400, "the failure comes back to the form"
    assert 'value="Doomed"' in response.text and "studio-error" in response.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = session.get(f"{hub.url}/hub/studios/gil/doomed", timeout=30).text
        if 'data-status="errored"' in page:
            break
        time.sleep(0.5)
    assert 'data-status="errored"' in page and 'id="studio-report"' in page
    assert "~/.local/state/studio/" in page


def test_a_default_server_in_use_is_a_studio_on_the_home(hub):
    """Started from the stock Home page (the default server, ""): listed with its actions."""
    hub.api("POST", "/users", json={"usernames": ["hank"]})
    session = hub.login("hank")
    assert "You have no studios yet" in session.get(f"{hub.url}/hub/studios", timeout=30).text
    hub.api("POST", "/users/hank/server", json={"name": "From Home", "template": "python"})
    deadline = time.monotonic() + 30
    while 'data-status="errored"' not in (page := session.get(f"{hub.url}/hub/studios",
                                                              timeout=30).text):
        assert time.monotonic() < deadline, "the default server is not listed as errored"
        time.sleep(0.5)
    row = page.split('data-server=""', 1)[1].split("</tr>", 1)[0]
    assert "From Home" in row and 'href="/hub/studios/hank/"' in row
    assert 'data-action="start"' in row and 'href="/hub/studios/hank//edit"' in row
    assert 'data-action="delete"' not in row, "JupyterHub keeps every user's default server"
    details = session.get(f"{hub.url}/hub/studios/hank/", timeout=30)
    assert details.status_code == 200 and "the default server" in details.text
    edit = session.get(f"{hub.url}/hub/studios/hank//edit", timeout=30)
    assert edit.status_code == 200 and 'value="From Home"' in edit.text
    saved = post(hub, session, "studios/hank//edit", name="Renamed", environment_source="template",
                 template="python", action="save")
    assert saved.headers["Location"].startswith("/hub/studios/hank/?"), saved.headers
    assert "Renamed" in session.get(f"{hub.url}/hub/studios", timeout=30).text


def test_lifespan_policy_endpoint_is_the_spawners_policy(hub):
    policy = hub.api("GET", "/studios/lifespan-policy")
    assert policy.status_code == 200, policy.text
    document = policy.json()
    assert document["policy"]["max_hours"] == 24
    assert document["group_policies"] == {"gpu": {"max_hours": 48}}
    assert document["hour_seconds"] == 3600


def test_jupyterhub_6_put_studios_are_listed_and_kept_when_their_start_is_refused(hub):
    hub.api("POST", "/users", json={"usernames": ["hal"]})
    invalid = hub.api("PUT", "/users/hal/servers/refused-put", json={
        "display_name": "Made by PUT", "user_options": {"name": "Made by PUT",
                                                        "lifespan_hours": 0}})
    if invalid.status_code == 405:
        pytest.skip(reason="JupyterHub 5.5 has no PUT to create a server without starting it")
    assert invalid.status_code == 400, "invalid options are refused with the field"
    assert "refused-put" not in all_servers(hub, "hal"), "a refused PUT leaves nothing"
    created = hub.api("PUT", "/users/hal/servers/made-by-put", json={
        "display_name": "Made by PUT", "user_options": {"name": "Made by PUT",
                                                        "lifespan_hours": 2}})
    assert created.status_code == 201, created.text
    session = hub.login("hal")
    page = session.get(f"{hub.url}/hub/studios", timeout=30).text
    assert 'data-server="made-by-put"' in page and "Made by PUT" in page
    refused = hub.api("POST", "/users/hal/servers/made-by-put",
                      json={"name": "Made by PUT", "lifespan_hours": 0})
    assert refused.status_code == 400 and "lifespan_hours" in refused.json()["message"]
    time.sleep(1.5)
    assert "made-by-put" in all_servers(hub, "hal"), "saved before: kept"
    post(hub, session, "studios/new", name="Shown everywhere", environment_source="template",
         template="python", action="add")
    assert all_servers(hub, "hal")["shown-everywhere"]["display_name"] == "Shown everywhere"
