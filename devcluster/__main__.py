"""``python -m devcluster [--state-dir DIR]``: run the devcluster until Ctrl-C or SIGTERM.

``python -m devcluster down --state-dir DIR`` stops a devcluster whose launcher died, by the
PIDs recorded in DIR/run, and removes its bridge, cgroups and mounts.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from .cluster import DevCluster
from .controlplane import DevClusterError, find_binaries
from .node import Network, Node
from .processes import Processes


def _down(state_dir: Path) -> int:
    processes = Processes(state_dir)
    network = Network(state_dir, reserve=False) if (state_dir / "network.json").exists() else None
    if network is not None:
        Node(state_dir, find_binaries(build=False), processes, None, network, {}, Path()).stop()
    for name in sorted(p.stem for p in processes.run_dir.glob("*.pid")):
        processes.stop(name)
    print(f"devcluster in {state_dir} stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["up", "down"], default="up")
    parser.add_argument("--state-dir", type=Path, help="keep state here (reused)")
    parser.add_argument("--no-node", action="store_true", help="control plane only")
    args = parser.parse_args(argv)
    if args.command == "down":
        if not args.state_dir:
            parser.error("down needs --state-dir")
        return _down(args.state_dir)
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut teardown
            signal.signal(sig, signal.SIG_IGN)
        if len(stopping) == 1 and not started:
            raise KeyboardInterrupt

    started: list[bool] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        with DevCluster(args.state_dir, node=not args.no_node) as cluster:
            started.append(True)
            print(f"devcluster ready: {json.dumps(cluster.timings)}")
            print(f"state and logs: {cluster.state_dir}")
            print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
            while cluster.running() and not stopping:
                time.sleep(0.5)
            if not stopping:
                print("devcluster: a process exited; see the logs", file=sys.stderr)
                return 1
        print("devcluster stopped")
        return 0
    except KeyboardInterrupt:
        print("devcluster stopped")
        return 0
    except DevClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
