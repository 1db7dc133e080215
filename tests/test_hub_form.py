"""The form and the REST API on a real JupyterHub (with configurable-http-proxy).

No cluster is needed: every request here is refused by validation before a pod is made.
"""

from __future__ import annotations

import re

import pytest

from .hub_fixtures import start_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from start_hub(tmp_path_factory.mktemp("hub"), "c.StudioSpawner.lifespan_max_hours = 24")


def test_spawn_page_shows_the_studio_form(hub):
    session = hub.login("ann")
    page = session.get(f"{hub.url}/hub/spawn/ann/rna", timeout=30)
    assert page.status_code == 200
    for name in ("name", "template", "environment_yml", "lifespan_hours", "private", "env"):
        assert f'name="{name}"' in page.text
    assert 'max="24"' in page.text, "the admin's lifespan bound reaches the form"


def test_invalid_submit_shows_errors_beside_fields_and_keeps_input(hub):
    session = hub.login("ann")
    url = f"{hub.url}/hub/spawn/ann/rna"
    session.get(url, timeout=30)
    response = session.post(
        url,
        data={"_xsrf": session.cookies.get("_xsrf", ""), "name": "My {rna} study",
              "environment_source": "custom", "image": "Not An Image", "lifespan_hours": "99",
              "env": "JUPYTERHUB_API_TOKEN=steal"},
        timeout=30,
    )
    text = response.text
    assert "The studio options need fixing" in text
    assert re.search(r'data-field="lifespan_hours"><div[^>]*>[^<]*1 to 24 hours', text)
    assert re.search(r'data-field="image"><div[^>]*>[^<]*spaces', text)
    assert re.search(r'data-field="env"><div[^>]*>JUPYTERHUB_API_TOKEN: [^<]*set by the hub', text)
    assert 'value="My {rna} study"' in text, "what the user typed is kept"
    status = hub.api("GET", "/users/ann").json()["servers"]
    assert "rna" not in status, "nothing was started"


def test_api_body_uses_the_same_validator(hub):
    hub.api("POST", "/users", json={"usernames": ["bob"]})
    response = hub.api("POST", "/users/bob/servers/s1",
                       json={"name": "x", "lifespan_hours": 0, "labels": {"app": "x"}})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "lifespan_hours" in message and "labels.app" in message
    assert "unhandled user_options" not in hub.log.read_text(), "the studio applies them"
