"""On the real node, with the devcluster's conda channel served over HTTP on the pod bridge: the
hub solves the studio's environment.yml before the pod (a missing package fails the spawn in
seconds, naming the field), the notebook image's studio-conda-install installs the hub's lock,
the env becomes a kernel, and the build's status and the lock are in the studio home."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devcluster.demo import HUB_CONFIG, demo_env
from studio_spawner.cli import load_config
from studio_spawner.home.config import catalog_view
from studio_spawner.spawner import StudioSpawner

from ..hub_fixtures import Hub, start_hub
from ..studio_fixtures import spawn_failure, studio_hub_config, wait_for_server
from .test_devcluster_kernels import run_code

INSTALLER = Path(__file__).parents[2] / "images" / "notebook" / "studio-conda-install"


@pytest.fixture(scope="module")
def channel(devcluster) -> str:
    """The devcluster's channel (the notebook image's packages), by name under its alias."""
    return devcluster.channel_name


@pytest.fixture(scope="module")
def conda_hub(devcluster, channel, tmp_path_factory) -> Iterator[Hub]:
    """A studio hub whose allowed channel is the devcluster's, served on the pod bridge."""
    cache = tmp_path_factory.mktemp("conda-pkgs")
    cache.chmod(0o777)  # studios run as uid 1000
    config = studio_hub_config(devcluster) + f"""
c.StudioSpawner.conda_channels = ["{channel}"]
c.StudioSpawner.conda_channel_alias = "{devcluster.channel_alias}"
c.StudioSpawner.conda_package_cache_volume = {{"hostPath": {{"path": "{cache}"}}}}
"""
    env = {"KUBECONFIG": str(devcluster.kubeconfig)}
    yield from start_hub(tmp_path_factory.mktemp("conda-hub"), config, env=env)


def options(channel: str, *packages: str) -> dict:
    deps = "".join(f"  - {p}\n" for p in packages)
    return {"name": "Conda", "template": "demo",
            "environment_yml": f"channels: [{channel}]\ndependencies:\n{deps}"}


def kernelspecs(base: str, headers: dict, timeout: float = 30) -> dict:
    """The server's kernelspecs; retried while the proxy's route settles (a 404 page)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = requests.get(f"{base}/kernelspecs", headers=headers, timeout=30)
        if reply.status_code == 200 or time.monotonic() > deadline:
            assert reply.status_code == 200, (reply.status_code, reply.text[-500:])
            return reply.json()["kernelspecs"]
        time.sleep(0.5)


def test_a_missing_package_fails_before_the_pod(conda_hub, channel, devcluster):
    seconds, message = spawn_failure(conda_hub, "fay", "env",
                                     options(channel, "python", "no-such-package-xyz"))
    assert seconds < 15, f"took {seconds:.1f} s"
    assert f"Conda packages: package no-such-package-xyz is not in {channel}" in message
    pods = devcluster.request("GET", "/api/v1/namespaces/default/pods")["items"]
    assert not any(p["metadata"]["name"] == "jupyter-fay--env" for p in pods)


def start_and_read_build(hub: Hub, user: str, server: str, spec: dict) -> dict:
    """Start a studio, wait until ready, and read ~/.local/share/studio/ through its kernel."""
    hub.api("POST", "/users", json={"usernames": [user]})
    response = hub.api("POST", f"/users/{user}/servers/{server}", json=spec)
    assert response.status_code < 300, response.text
    model = wait_for_server(hub, user, server, timeout=180)
    assert model.get("ready"), hub.log.read_text()[-3000:]
    base = f"{hub.url}/user/{user}/{server}/api"
    headers = {"Authorization": f"token {hub.token}"}
    assert "studio-studio" in kernelspecs(base, headers)
    kernel = requests.post(f"{base}/kernels", json={"name": "studio-studio"}, headers=headers,
                           timeout=60).json()
    ws_url = f"{base}/kernels/{kernel['id']}/channels".replace("http://", "ws://")
    code = ("import json, os; d = os.path.expanduser('~/.local/share/studio/'); "
            "print(json.dumps({'status': json.load(open(d + 'build.json')), "
            "'lock': open(d + 'environment.lock').read(), 'log': open(d + 'build.log').read()}))")
    return json.loads(asyncio.run(run_code(ws_url, hub.token, code)))


def test_the_pod_installs_the_hub_lock_and_the_home_shows_the_build(conda_hub, devcluster,
                                                                    monkeypatch):
    """The demo form's example (./dev run) builds; without ipykernel it still is a kernel."""
    for name, value in demo_env(devcluster).items():
        monkeypatch.setenv(name, value)
    demo = catalog_view(StudioSpawner, load_config(str(HUB_CONFIG)))
    assert demo.image_example() == devcluster.image("notebook")  # an allowed registry's
    example = demo.environment_yml_example
    assert "studio-hello" in example and "ipykernel" not in example
    seen = start_and_read_build(conda_hub, "gus", "env",
                                {"name": "Conda", "template": "demo", "environment_yml": example})
    assert seen["status"]["state"] == "built" and seen["status"]["locked"] is True
    assert "studio-hello-1.0-0.tar.bz2" in seen["lock"]
    assert "ipykernel-7.4.0-0.tar.bz2" in seen["lock"]  # added by the hub: the kernel works
    assert "Solving" not in seen["log"] and "Installing" in seen["log"]
    conda_hub.api("DELETE", "/users/gus/servers/env")


def test_a_second_studio_builds_from_the_shared_package_cache(conda_hub, channel):
    spec = options(channel, "python", "ipykernel", "studio-hello", "studio-tools")
    first = start_and_read_build(conda_hub, "hal", "one", spec)
    second = start_and_read_build(conda_hub, "hal", "two", spec)
    assert first["lock"] == second["lock"]
    count = len(set(re.findall(r"conda: (\S+)", second["lock"])))
    assert f"Installing {count} package(s)" in second["log"]
    assert f"({count} already in the package cache /opt/studio/pkgs)" in second["log"]
    print(f"user-env build: first {first['status']['seconds']} s, "
          f"second {second['status']['seconds']} s")
    for server in ("one", "two"):
        conda_hub.api("DELETE", f"/users/hal/servers/{server}")
