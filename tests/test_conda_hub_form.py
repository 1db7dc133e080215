"""On a real JupyterHub: a submitted environment.yml is solved before anything starts, and a
missing package is shown next to the field within seconds, with the text kept."""

from __future__ import annotations

import html
import re
import time

import pytest

from .conda_packages import build_package, index_channel, library_package, serve_directory
from .hub_fixtures import start_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("channels")
    build_package(root / "local", library_package("pandas", "2.2"))
    index_channel(root / "local")
    with serve_directory(root) as url:
        config = (f'c.StudioSpawner.conda_channels = ["local"]\n'
                  f'c.StudioSpawner.conda_channel_alias = "{url}/"\n')
        yield from start_hub(tmp_path_factory.mktemp("hub"), config)


def test_a_missing_package_is_shown_beside_the_field(hub):
    session = hub.login("ann")
    url = f"{hub.url}/hub/spawn/ann/conda"
    session.get(url, timeout=30)
    spec = "channels: [local]\ndependencies:\n  - pandas\n  - pandsa\n"
    started = time.monotonic()
    response = session.post(
        url,
        data={"_xsrf": session.cookies.get("_xsrf", ""), "name": "Conda",
              "environment_source": "template", "template": "python", "environment_yml": spec},
        timeout=60,
    )
    assert time.monotonic() - started < 10
    text = response.text
    assert re.search(r'data-field="environment_yml"><div[^>]*>[^<]*package pandsa is not in '
                     r'local', text)
    assert html.escape(spec, quote=False) in text, "what the user typed is kept"
    assert "conda" not in hub.api("GET", "/users/ann").json()["servers"], "nothing started"
