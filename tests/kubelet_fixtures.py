"""Fixtures running the devcluster kubelet against the devcluster API server.

Register them next to the devcluster ones::

    from tests.devcluster_fixtures import devcluster  # noqa: F401
    from tests.kubelet_fixtures import kubelet, kubelet_images  # noqa: F401

``kubelet_images`` (session): an images file with one demo image, ``DEMO_IMAGE``
(``devcluster.local/demo``, any tag), whose directory holds ``/opt/devdemo/bin/devdemo-hello``.
``kubelet`` (session): the kubelet as a subprocess (``python -m
studio_spawner.devcluster.kubelet``) with a 1 s back-off, started once node ``devnode`` is Ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

DEMO_IMAGE = "devcluster.local/demo:1.0"
NODE = "devnode"


@dataclass
class KubeletProcess:
    """A running kubelet subprocess and where it keeps things."""

    process: subprocess.Popen
    state_dir: Path
    images: Path
    log: Path
    node: str = NODE

    def container_log(self, namespace: str, name: str, uid: str, container: str,
                      run: int = 0) -> str:
        """The log of one run of a container."""
        path = self.state_dir / "logs" / f"{namespace}_{name}_{uid}" / container / f"{run}.log"
        return path.read_text()


@pytest.fixture(scope="session")
def kubelet_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An images file mapping ``devcluster.local/demo`` to a small demo image directory."""
    root = tmp_path_factory.mktemp("kubelet-images")
    tool = root / "demo" / "opt" / "devdemo" / "bin" / "devdemo-hello"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho hello from the demo image\n")
    tool.chmod(0o755)
    images = root / "images.yaml"
    images.write_text(yaml.safe_dump({"images": {
        "devcluster.local/demo": {
            "path": "demo",
            "env": {"PATH": "/opt/devdemo/bin:/usr/local/bin:/usr/bin:/bin"},
            "workingDir": "/tmp",
        },
    }}))
    return images


@pytest.fixture(scope="session")
def kubelet(devcluster, kubelet_images: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[KubeletProcess]:
    """The devcluster kubelet, running as a subprocess for the whole session."""
    state = tmp_path_factory.mktemp("kubelet-state")
    log = state.parent / "kubelet.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio_spawner.devcluster.kubelet",
             "--kubeconfig", str(devcluster.kubeconfig), "--state-dir", str(state),
             "--images", str(kubelet_images), "--node-name", NODE, "--backoff", "1",
             "--backoff-max", "4", "--scheduler-name", "default-scheduler",
             "--pod-ips", os.environ.get("STUDIO_TEST_POD_IPS", "127.0.0.10-127.0.0.254")],
            stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kubelet exited ({proc.returncode}):\n{log.read_text()}")
        try:
            node = devcluster.request("GET", f"/api/v1/nodes/{NODE}")
            conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            if conds.get("Ready") == "True":
                break
        except Exception:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"node {NODE} not Ready:\n{log.read_text()}")
        time.sleep(0.2)
    try:
        yield KubeletProcess(proc, state, kubelet_images, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
