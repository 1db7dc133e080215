"""``./dev run``: the devcluster, then a JupyterHub with StudioSpawner and a demo catalogue.

    python -m devcluster.demo [jupyterhub args…]

The catalogue offers the devcluster's notebook image (JupyterLab, two image conda envs, a conda
installer with a local channel) and a demo S3 server (moto) whose two buckets are offered as
data repositories; on this machine their contents are local volumes (admin-made claims).
Ctrl-C stops everything.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3

from .cluster import DevCluster
from .controlplane import free_port

HUB_CONFIG = Path(__file__).resolve().parents[1] / "hub_config" / "jupyterhub_config.py"
DEMO_BUCKETS = {"reference": "demo-reference", "scratch": "demo-scratch"}
DEMO_AWS_ENV = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def demo_s3() -> Iterator[dict[str, str]]:
    """An S3 server (moto) with the demo buckets; yields the hub's env for it ({} without moto)."""
    if importlib.util.find_spec("moto") is None:
        yield {}
        return
    port = free_port()
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
        for bucket in DEMO_BUCKETS.values():
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield {**DEMO_AWS_ENV, "STUDIO_DEMO_S3_ENDPOINT": url}
    finally:
        server.terminate()
        server.wait(10)


def create_data_claims(cluster: DevCluster, namespace: str = "default") -> None:
    """The admin-made claims of the demo repositories (``claims`` provisioning): local volumes."""
    for name in DEMO_BUCKETS:
        for mode, access in (("ro", "ReadOnlyMany"), ("rw", "ReadWriteMany")):
            body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": f"studio-data-{name}-{mode}"},
                    "spec": {"accessModes": [access],
                             "resources": {"requests": {"storage": "1Gi"}}}}
            with contextlib.suppress(urllib.error.HTTPError):  # 409: exists
                cluster.request("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
                                body)


def demo_env(cluster: DevCluster) -> dict[str, str]:
    """What hub_config/jupyterhub_config.py reads to offer the devcluster's images."""
    return {"KUBECONFIG": str(cluster.kubeconfig), "STUDIO_HUB_IP": cluster.host_ip,
            "STUDIO_DEMO_IMAGE": cluster.image("notebook"),
            "STUDIO_DEMO_TOOL_IMAGE": cluster.image("tool"),
            "STUDIO_DEMO_CONNECT_IMAGE": cluster.image("studio-connect"),
            "STUDIO_DEMO_CHANNEL": cluster.channel_name,
            "STUDIO_DEMO_CHANNEL_ALIAS": cluster.channel_alias}


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: stop the hub, then the devcluster; a second signal cannot cut that."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    print("Starting the devcluster (the first run builds Kubernetes and the images: many "
          "minutes)…", flush=True)
    with tempfile.TemporaryDirectory(prefix="studio-demo-") as tmp, DevCluster() as cluster, \
            demo_s3() as s3_env:
        create_data_claims(cluster)
        env = {**os.environ, **demo_env(cluster), **s3_env}
        print(f"Cluster ready in {cluster.timings.get('ready')} s: "
              f"export KUBECONFIG={cluster.kubeconfig}")
        print("JupyterHub: http://127.0.0.1:8000  (any user name, password: studio)", flush=True)
        hub = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG),
                                *argv], cwd=tmp, env=env)
        try:
            return hub.wait()
        except KeyboardInterrupt:
            print("Stopping the hub and the devcluster…", flush=True)
            hub.terminate()
            return hub.wait(30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
