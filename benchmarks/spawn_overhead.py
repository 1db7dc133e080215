"""Spawn overhead on the devcluster's real node: StudioSpawner vs plain KubeSpawner, same run.

Every hub starts the same notebook image (pulled once, before measuring) as uid 1000 with
fsGroup 100 and a home volume from the devcluster's provisioner. StudioSpawner adds its options,
the files Secret and the start-up steps (init containers); "StudioSpawner+ECR" pulls the image
from the private registry under an Amazon ECR name (image check and token against moto, pull
Secret). The floor is a bare pod of the same image: creation until its container runs. Also
prints the node's start time and the kubelet's and containerd's memory.

    python benchmarks/spawn_overhead.py [N]      (N spawns per spawner after one warm-up)
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devcluster import DevCluster  # noqa: E402
from devcluster.demo import demo_s3  # noqa: E402
from tests.aws_fixtures import Moto, ecr_host  # noqa: E402
from tests.hub_fixtures import Hub, start_hub  # noqa: E402


def common(cluster: DevCluster) -> str:
    return f"""
c.JupyterHub.hub_ip = "{cluster.host_ip}"
c.KubeSpawner.namespace = "default"
c.KubeSpawner.image = "{cluster.image('notebook')}"
c.KubeSpawner.start_timeout = 180
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.storage_capacity = "10Gi"
c.KubeSpawner.pvc_name_template = "claim-{{user_server}}"
c.KubeSpawner.volumes = [{{"name": "home",
    "persistentVolumeClaim": {{"claimName": "claim-{{user_server}}"}}}}]
c.KubeSpawner.volume_mounts = [{{"name": "home", "mountPath": "/home/jovyan"}}]
"""


def studio(cluster: DevCluster, image: str) -> str:
    return common(cluster) + f"""
c.StudioSpawner.templates = [{{"id": "demo", "display_name": "Demo", "image": "{image}"}}]
c.StudioSpawner.allowed_registries = ["registry.studio.test/**", "*.dkr.ecr.*.amazonaws.com/**"]
"""


def plain(cluster: DevCluster) -> str:
    return common(cluster) + """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
"""


def cycle(hub: Hub, user: str, server: str) -> float:
    """Seconds from the start request until the server is ready (then stop and wait)."""
    started = time.perf_counter()
    response = hub.api("POST", f"/users/{user}/servers/{server}", json={"name": server})
    if response.status_code >= 400:
        raise SystemExit(f"{response.status_code} {response.text}\n{hub.log.read_text()[-3000:]}")
    while not hub.api("GET", f"/users/{user}").json()["servers"].get(server, {}).get("ready"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    hub.api("DELETE", f"/users/{user}/servers/{server}")
    while hub.api("GET", f"/users/{user}").json()["servers"].get(server):
        time.sleep(0.1)
    return elapsed


def measure(config: str, env: dict[str, str], root: Path, n: int
            ) -> tuple[list[float], list[float]]:
    """(first starts of new studios, restarts of one studio): N of each after a warm-up.

    A first start gets a new home volume (StudioSpawner copies the image's envs into it); a
    restart finds the volume and its envs as they were (the sync has nothing to do).
    """
    root.mkdir()
    with contextlib.contextmanager(start_hub)(root, config, env=env) as hub:
        hub.api("POST", "/users", json={"usernames": ["bench"]})
        cycle(hub, "bench", "warmup")
        first = [cycle(hub, "bench", f"s{i}") for i in range(n)]
        restarts = [cycle(hub, "bench", "warmup") for _ in range(n)]
        return first, restarts


def bare_pod(cluster: DevCluster) -> float:
    """Seconds from creating a pod of the image until its container runs."""
    name = f"floor-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    cluster.request("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": name},
        "spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 100},
                 "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": cluster.image("notebook"),
                                 "command": ["sleep", "300"]}]}})
    path = f"/api/v1/namespaces/default/pods/{name}"
    while True:
        statuses = cluster.request("GET", path)["status"].get("containerStatuses") or []
        if statuses and "running" in (statuses[0].get("state") or {}):
            elapsed = time.perf_counter() - started
            break
        time.sleep(0.02)
    cluster.request("DELETE", path)
    return elapsed


def rss_mib(pid: int | None) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, DevCluster() as cluster, demo_s3() as aws_env:
        root = Path(tmp)
        env = {"KUBECONFIG": str(cluster.kubeconfig)}
        endpoint = aws_env["STUDIO_DEMO_S3_ENDPOINT"]
        repository, _ = Moto(endpoint).ecr_image(tag="1.0")
        ecr_image = f"{ecr_host()}/{repository}:1.0"
        cluster.push_image("notebook", ecr_image)
        aws = studio(cluster, ecr_image) + f'\nc.StudioSpawner.aws_endpoint_url = "{endpoint}"\n'
        floor = [bare_pod(cluster) for _ in range(n + 1)][1:]  # the first one pulls the image
        runs = {
            "KubeSpawner": measure(plain(cluster), env, root / "plain", n),
            "StudioSpawner": measure(studio(cluster, cluster.image("notebook")), env,
                                     root / "studio", n),
            "StudioSpawner+ECR": measure(aws, {**env, **aws_env}, root / "aws", n),
        }
        memory = {name: rss_mib(cluster._processes.pid(name))
                  for name in ("kubelet", "containerd")}
        timings = cluster.timings
    print(f"spawns per spawner: {n} (after one warm-up)")
    print(f"devcluster start: {timings}")
    print("memory after the run (RSS): " + ", ".join(f"{k} {v:.0f} MiB"
                                                     for k, v in memory.items()))
    print(f"{'spawner':<20}{'start':<9}{'median s':>10}{'min s':>8}{'max s':>8}")
    print(f"{'floor (bare pod)':<20}{'':<9}{statistics.median(floor):>10.2f}{min(floor):>8.2f}"
          f"{max(floor):>8.2f}")
    for name, (first, restarts) in runs.items():
        for kind, values in (("first", first), ("restart", restarts)):
            print(f"{name:<20}{kind:<9}{statistics.median(values):>10.2f}{min(values):>8.2f}"
                  f"{max(values):>8.2f}")
    for index, kind in enumerate(("first start", "restart")):
        base, ours, aws_ = (statistics.median(runs[k][index]) for k in
                            ("KubeSpawner", "StudioSpawner", "StudioSpawner+ECR"))
        print(f"{kind}: ratio StudioSpawner / KubeSpawner (median time to ready) "
              f"{ours / base:.2f}x; StudioSpawner+ECR / KubeSpawner {aws_ / base:.2f}x; "
              f"floor / KubeSpawner {statistics.median(floor) / base:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
