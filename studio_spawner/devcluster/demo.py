"""Run the product on the devcluster: API server, kubelet, and a JupyterHub with StudioSpawner.

    python -m studio_spawner.devcluster.demo [jupyterhub args…]     (what `./dev run` does)

The demo image catalogue maps `devcluster.local/studio` to a directory that uses this Python
(which has jupyterhub-singleuser) and holds an empty `/opt/conda/envs`. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from .cluster import DevCluster
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


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="studio-demo-") as tmp:
        root = Path(tmp)
        print("Starting the devcluster (the first run builds kube-apiserver: many minutes)…")
        with DevCluster() as cluster, KubeletThread(
            kubeconfig=str(cluster.kubeconfig), state_dir=str(root / "kubelet"),
            images=str(write_demo_images(root)),
        ):
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
                   "STUDIO_DEMO_IMAGE": DEMO_IMAGE}
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
