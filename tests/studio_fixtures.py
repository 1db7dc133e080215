"""A JupyterHub with StudioSpawner on the devcluster's real node, and its images.

Studios run as Zero to JupyterHub runs them: uid 1000, fsGroup 100, the image's ENTRYPOINT, a
home volume per server from the devcluster's provisioner. The hub listens on the host's address
on the pod bridge so that pods reach its API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from devcluster.cluster import IMAGE_TAG
from devcluster.registry import PUBLIC_HOST

from .hub_fixtures import Hub, start_hub

__all__ = ["PUBLIC_HOST"]

STUDIO_IMAGE = f"{PUBLIC_HOST}/notebook:{IMAGE_TAG}"
TOOL_IMAGE = f"{PUBLIC_HOST}/tool:{IMAGE_TAG}"
NOPYTHON_IMAGE = f"{PUBLIC_HOST}/nopython:{IMAGE_TAG}"
BROKEN_IMAGE = f"{PUBLIC_HOST}/does-not-exist:{IMAGE_TAG}"


def studio_hub_config(devcluster) -> str:
    """Hub settings for spawning studios of the notebook image on the devcluster."""
    return f"""
c.JupyterHub.hub_ip = "{devcluster.host_ip}"
c.KubeSpawner.namespace = "default"
c.KubeSpawner.start_timeout = 120
c.KubeSpawner.http_timeout = 90
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.pvc_name_template = "claim-{{user_server}}"
c.KubeSpawner.volumes = [{{"name": "home",
    "persistentVolumeClaim": {{"claimName": "claim-{{user_server}}"}}}}]
c.KubeSpawner.volume_mounts = [{{"name": "home", "mountPath": "/home/jovyan"}}]
c.StudioSpawner.templates = [
    {{"id": "demo", "display_name": "Demo", "image": "{STUDIO_IMAGE}", "default_url": "/api"}},
]
c.StudioSpawner.allowed_registries = ["{PUBLIC_HOST}/**"]
c.StudioSpawner.allow_keep_running = True
"""


@pytest.fixture(scope="session")
def studio_hub(devcluster, tmp_path_factory) -> Iterator[Hub]:
    """A real hub (and proxy) spawning studios on the devcluster."""
    env = {"KUBECONFIG": str(devcluster.kubeconfig)}
    yield from start_hub(tmp_path_factory.mktemp("studio-hub"), studio_hub_config(devcluster),
                         env=env)


def wait_for_server(hub: Hub, user: str, server: str, timeout: float = 120) -> dict:
    """Wait until a server is ready (or its spawn failed); return the server model or {}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = hub.api("GET", f"/users/{user}").json()["servers"].get(server)
        if not model or model.get("ready"):
            return model or {}
        if model.get("pending") is None and not model.get("ready"):
            return model
        time.sleep(0.5)
    raise AssertionError(f"{user}/{server} did not become ready in {timeout} s")


def spawn_failure(hub: Hub, user: str, server: str, options: dict) -> tuple[float, str]:
    """Start a server that must fail; (seconds until it failed, the message or progress)."""
    hub.api("POST", "/users", json={"usernames": [user]})
    started = time.monotonic()
    response = hub.api("POST", f"/users/{user}/servers/{server}", json=options)
    if response.status_code >= 400:
        return time.monotonic() - started, response.text
    deadline = time.monotonic() + 150  # past the hub's start timeout: no fail-fast at all
    while time.monotonic() < deadline:
        model = hub.api("GET", f"/users/{user}").json()["servers"].get(server)
        if not model or (model.get("pending") is None and not model.get("ready")):
            progress = requests.get(
                f"{hub.url}/hub/api/users/{user}/servers/{server}/progress",
                headers={"Authorization": f"token {hub.token}"}, timeout=30,
            ).text
            return time.monotonic() - started, progress
        time.sleep(0.3)
    raise AssertionError("the spawn neither failed nor succeeded")


def home_file(hub: Hub, user: str, server: str, name: str) -> str:
    """A file in the studio's home, read through the proxy with the Jupyter contents API."""
    response = requests.get(f"{hub.url}/user/{user}/{server}/api/contents/{name}",
                            params={"content": "1", "type": "file", "format": "text"},
                            headers={"Authorization": f"token {hub.token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["content"]
