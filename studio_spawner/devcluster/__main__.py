"""``python -m studio_spawner.devcluster [--state-dir DIR]``: run a devcluster until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from .cluster import DevCluster, DevClusterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio_spawner.devcluster",
                                     description=__doc__)
    parser.add_argument("--state-dir", help="keep certs, etcd data and logs here (reused)")
    parser.add_argument("--no-build", action="store_true", help="fail instead of building")
    args = parser.parse_args(argv)
    # SIGINT (even when started in the background) and SIGTERM stop the processes cleanly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    started = time.monotonic()
    try:
        with DevCluster(args.state_dir, build=not args.no_build) as cluster:
            print(f"devcluster ready in {time.monotonic() - started:.1f}s at {cluster.server}")
            print(f"state and logs: {cluster.state_dir}")
            print(f"kubeconfig: {cluster.kubeconfig}")
            print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
            while cluster.running():
                time.sleep(1)
            print("devcluster: a process exited; see the logs", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("devcluster stopped")
        return 0
    except DevClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
