"""A JupyterHub with StudioSpawner on the devcluster, and a demo studio image.

The demo image is a directory the devcluster kubelet overlays into the container: it has a
conda-style env folder and uses this Python (which has jupyterhub-singleuser) as its Python.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from studio_spawner.devcluster.demo import DEMO_IMAGE, write_demo_images

from .hub_fixtures import Hub, start_hub

STUDIO_IMAGE = DEMO_IMAGE
BROKEN_IMAGE = "devcluster.local/does-not-exist:1.0"


@pytest.fixture(scope="session")
def studio_images(kubelet_images: Path) -> Path:
    """Adds the demo studio image to the kubelet's images file (read at every pull)."""
    demo = yaml.safe_load(write_demo_images(kubelet_images.parent / "demo-studio").read_text())
    for entry in demo["images"].values():
        entry["path"] = str(kubelet_images.parent / "demo-studio" / entry["path"])
    images = yaml.safe_load(kubelet_images.read_text())
    images["images"].update(demo["images"])
    kubelet_images.write_text(yaml.safe_dump(images))
    return kubelet_images


def studio_hub_config() -> str:
    """Hub settings for spawning studios of the demo image on the devcluster."""
    return f"""
c.JupyterHub.hub_ip = "127.0.0.1"
c.Spawner.args = ["--ServerApp.allow_root=True"]  # the devcluster runs pods as root
c.KubeSpawner.namespace = "default"
c.KubeSpawner.start_timeout = 90
c.KubeSpawner.http_timeout = 60
c.KubeSpawner.environment = {{"HOME": "/home/jovyan"}}
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.pvc_name_template = "claim-{{user_server}}"
c.KubeSpawner.volumes = [{{"name": "home",
    "persistentVolumeClaim": {{"claimName": "claim-{{user_server}}"}}}}]
c.KubeSpawner.volume_mounts = [{{"name": "home", "mountPath": "/home/jovyan"}}]
c.StudioSpawner.templates = [
    {{"id": "demo", "display_name": "Demo", "image": "{STUDIO_IMAGE}", "default_url": "/api"}},
]
c.StudioSpawner.allowed_registries = ["devcluster.local/*"]
c.StudioSpawner.allow_keep_running = True
"""


@pytest.fixture(scope="session")
def studio_hub(devcluster, kubelet, studio_images, tmp_path_factory) -> Iterator[Hub]:
    """A real hub (and proxy) spawning studios on the devcluster."""
    env = {"KUBECONFIG": str(devcluster.kubeconfig)}
    yield from start_hub(tmp_path_factory.mktemp("studio-hub"), studio_hub_config(), env=env)


def wait_for_server(hub: Hub, user: str, server: str, timeout: float = 90) -> dict:
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


def home_file(hub: Hub, user: str, server: str, name: str) -> str:
    """A file in the studio's home, read through the proxy with the Jupyter contents API."""
    response = requests.get(f"{hub.url}/user/{user}/{server}/api/contents/{name}",
                            params={"content": "1", "type": "file", "format": "text"},
                            headers={"Authorization": f"token {hub.token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["content"]
