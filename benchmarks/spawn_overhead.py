"""Spawn overhead: N start/stop cycles with StudioSpawner vs plain KubeSpawner, same run.

Both hubs use the devcluster, its kubelet and the same demo image. StudioSpawner adds its
options, the files Secret and the start-up steps (init containers); this prints what they cost.

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

from studio_spawner.devcluster import DevCluster  # noqa: E402
from studio_spawner.devcluster.demo import DEMO_IMAGE, write_demo_images  # noqa: E402
from studio_spawner.devcluster.kubelet import KubeletThread  # noqa: E402
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
PLAIN = COMMON + """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
"""


def cycle(hub: Hub, devcluster: DevCluster, user: str, server: str) -> float:
    """Seconds from the start request until the server is ready (then stop and wait)."""
    started = time.perf_counter()
    response = hub.api("POST", f"/users/{user}/servers/{server}", json={"name": server})
    response.raise_for_status()
    while not hub.api("GET", f"/users/{user}").json()["servers"].get(server, {}).get("ready"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    hub.api("DELETE", f"/users/{user}/servers/{server}")
    while hub.api("GET", f"/users/{user}").json()["servers"].get(server):
        time.sleep(0.1)
    return elapsed


def measure(config: str, devcluster: DevCluster, root: Path, n: int) -> list[float]:
    env = {"KUBECONFIG": str(devcluster.kubeconfig)}
    with contextlib.contextmanager(start_hub)(root, config, env=env) as hub:
        hub.api("POST", "/users", json={"usernames": ["bench"]})
        cycle(hub, devcluster, "bench", "warmup")
        return [cycle(hub, devcluster, "bench", f"s{i}") for i in range(n)]


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = write_demo_images(root / "images")
        with DevCluster() as cluster, KubeletThread(
            kubeconfig=str(cluster.kubeconfig), state_dir=str(root / "kubelet"), images=str(images)
        ):
            (root / "plain").mkdir()
            (root / "studio").mkdir()
            plain = measure(PLAIN, cluster, root / "plain", n)
            studio = measure(STUDIO, cluster, root / "studio", n)
    p, s = statistics.median(plain), statistics.median(studio)
    print(f"spawns per spawner: {n} (after one warm-up)")
    print(f"{'spawner':<14}{'median s':>10}{'min s':>8}{'max s':>8}")
    for name, times in (("KubeSpawner", plain), ("StudioSpawner", studio)):
        med = statistics.median(times)
        print(f"{name:<14}{med:>10.2f}{min(times):>8.2f}{max(times):>8.2f}")
    print(f"ratio StudioSpawner / KubeSpawner (median time to ready): {s / p:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
