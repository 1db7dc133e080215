"""Run the product on the devcluster: API server, kubelet, and a JupyterHub with StudioSpawner.

    python -m studio_spawner.devcluster.demo [jupyterhub args…]     (what `./dev run` does)

The demo image catalogue maps `devcluster.local/studio` to a directory that uses this Python
(which has jupyterhub-singleuser) and holds an empty `/opt/conda/envs`. When moto is installed
(it is with ``./dev run``), an S3 server on loopback holds two demo buckets, offered as data
repositories (the kubelet stands in for the Mountpoint CSI driver with local directories).
Ctrl-C stops everything.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import yaml

from .cluster import DevCluster, _free_port
from .kubelet import KubeletThread

DEMO_IMAGE = "devcluster.local/studio:1.0"
HUB_CONFIG = Path(__file__).resolve().parents[2] / "hub_config" / "jupyterhub_config.py"


def write_demo_images(root: Path) -> Path:
    """Create the demo studio image directory and an images file naming it; return the file."""
    (root / "studio" / "opt" / "conda" / "envs").mkdir(parents=True, exist_ok=True)
    images = root / "images.yaml"
    python_bin = Path(sys.executable).parent
    images.write_text(yaml.safe_dump({"images": {"devcluster.local/studio": {
        "path": "studio", "env": {"PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin"},
    }}}))
    return images


DEMO_BUCKETS = ("demo-reference", "demo-scratch")
DEMO_AWS_ENV = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def demo_s3() -> Iterator[dict[str, str]]:
    """An S3 server (moto) with the demo buckets; yields the hub's env for it ({} without moto)."""
    if importlib.util.find_spec("moto") is None:
        yield {}
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=url, region_name="eu-west-1",
                          aws_access_key_id="demo", aws_secret_access_key="demo")
        for bucket in DEMO_BUCKETS:
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield {**DEMO_AWS_ENV, "STUDIO_DEMO_S3_ENDPOINT": url}
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="studio-demo-") as tmp:
        root = Path(tmp)
        print("Starting the devcluster (the first run builds kube-apiserver: many minutes)…")
        with DevCluster() as cluster, KubeletThread(
            kubeconfig=str(cluster.kubeconfig), state_dir=str(root / "kubelet"),
            images=str(write_demo_images(root)),
        ), demo_s3() as s3_env:
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
                   "STUDIO_DEMO_IMAGE": DEMO_IMAGE, **s3_env}
            print(f"Cluster ready: export KUBECONFIG={cluster.kubeconfig}")
            print("JupyterHub: http://127.0.0.1:8000  (any user name, password: studio)")
            hub = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG), *argv],
                cwd=root, env=env,
            )
            try:
                return hub.wait()
            except KeyboardInterrupt:
                hub.terminate()
                return hub.wait(30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
