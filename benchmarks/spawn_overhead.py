"""Spawn overhead: N start/stop cycles with StudioSpawner vs plain KubeSpawner, same run.

All hubs use the devcluster, its kubelet and the same demo image. StudioSpawner adds its
options, the files Secret and the start-up steps (init containers); "StudioSpawner+AWS" also
mounts two S3 data repositories (bucket checks, Mountpoint PV and claim) and pulls its image
from Amazon ECR (image check, token, pull Secret), against moto as S3 and ECR. This prints what
each costs.

    python benchmarks/spawn_overhead.py [N]
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402
from studio_spawner.devcluster import DevCluster  # noqa: E402
from studio_spawner.devcluster.demo import DEMO_IMAGE, demo_s3, write_demo_images  # noqa: E402
from studio_spawner.devcluster.kubelet import KubeletThread  # noqa: E402

from tests.aws_fixtures import Moto, ecr_host  # noqa: E402
from tests.hub_fixtures import Hub, start_hub  # noqa: E402

COMMON = f"""
c.JupyterHub.hub_ip = "127.0.0.1"
c.KubeSpawner.namespace = "default"
c.KubeSpawner.image = "{DEMO_IMAGE}"
c.KubeSpawner.start_timeout = 120
c.Spawner.args = ["--ServerApp.allow_root=True"]
c.KubeSpawner.environment = {{"HOME": "/tmp"}}
"""
STUDIO = COMMON + f"""
c.StudioSpawner.templates = [{{"id": "demo", "display_name": "Demo", "image": "{DEMO_IMAGE}"}}]
"""
DATA = [{"name": "reference"}, {"name": "scratch", "writable": True}]


def aws_config(endpoint: str, image: str) -> str:
    return COMMON + f"""
c.StudioSpawner.templates = [{{"id": "demo", "display_name": "Demo", "image": "{image}"}}]
c.StudioSpawner.aws_endpoint_url = "{endpoint}"
c.StudioSpawner.data_provisioning = "mountpoint"
c.StudioSpawner.data_repositories = [
    {{"name": "reference", "bucket": "demo-reference", "region": "eu-west-1"}},
    {{"name": "scratch", "bucket": "demo-scratch", "region": "eu-west-1", "writable": True}},
]
"""


def private_ecr_image(images: Path, endpoint: str) -> str:
    """An ECR repository in moto whose image the kubelet pulls only with a pull Secret."""
    repository, _ = Moto(endpoint).ecr_image(tag="1.0")
    entries = yaml.safe_load(images.read_text())
    demo = entries["images"]["devcluster.local/studio"]
    entries["images"][f"{ecr_host()}/{repository}"] = {**demo, "pullAuth": {"username": "AWS"}}
    images.write_text(yaml.safe_dump(entries))
    return f"{ecr_host()}/{repository}:1.0"


PLAIN = COMMON + """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
"""


def cycle(hub: Hub, user: str, server: str, data: list[dict]) -> float:
    """Seconds from the start request until the server is ready (then stop and wait)."""
    started = time.perf_counter()
    body = {"name": server, **({"data": data} if data else {})}
    response = hub.api("POST", f"/users/{user}/servers/{server}", json=body)
    response.raise_for_status()
    while not hub.api("GET", f"/users/{user}").json()["servers"].get(server, {}).get("ready"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    hub.api("DELETE", f"/users/{user}/servers/{server}")
    while hub.api("GET", f"/users/{user}").json()["servers"].get(server):
        time.sleep(0.1)
    return elapsed


def measure(config: str, env: dict[str, str], root: Path, n: int, data: list[dict] = ()
            ) -> list[float]:
    root.mkdir()
    with contextlib.contextmanager(start_hub)(root, config, env=env) as hub:
        hub.api("POST", "/users", json={"usernames": ["bench"]})
        cycle(hub, "bench", "warmup", list(data))
        return [cycle(hub, "bench", f"s{i}", list(data)) for i in range(n)]


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = write_demo_images(root / "images")
        with DevCluster() as cluster, KubeletThread(
            kubeconfig=str(cluster.kubeconfig), state_dir=str(root / "kubelet"), images=str(images)
        ), demo_s3() as aws_env:
            env = {"KUBECONFIG": str(cluster.kubeconfig)}
            endpoint = aws_env["STUDIO_DEMO_S3_ENDPOINT"]
            aws = aws_config(endpoint, private_ecr_image(images, endpoint))
            times = {
                "KubeSpawner": measure(PLAIN, env, root / "plain", n),
                "StudioSpawner": measure(STUDIO, env, root / "studio", n),
                "StudioSpawner+AWS": measure(aws, {**env, **aws_env}, root / "aws", n, DATA),
            }
    print(f"spawns per spawner: {n} (after one warm-up)")
    print(f"{'spawner':<18}{'median s':>10}{'min s':>8}{'max s':>8}")
    for name, values in times.items():
        print(f"{name:<18}{statistics.median(values):>10.2f}{min(values):>8.2f}"
              f"{max(values):>8.2f}")
    plain, studio, aws = (statistics.median(v) for v in times.values())
    print(f"ratio StudioSpawner / KubeSpawner (median time to ready): {studio / plain:.2f}x")
    print(f"ratio StudioSpawner+AWS / KubeSpawner: {aws / plain:.2f}x; "
          f"/ StudioSpawner: {aws / studio:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
