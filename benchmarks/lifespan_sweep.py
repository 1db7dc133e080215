"""One sweep of the lifespan service vs. jupyterhub-idle-culler ``--max-age``, same hub.

A real JupyterHub (configurable-http-proxy, sqlite) runs ~1,000 servers of a spawner that
costs no processes (``NoProcessSpawner``: every server is one shared in-hub HTTP responder).
Both tools talk to the Hub API through a counting reverse proxy. Two phases, same hub:

1. steady state: nothing is due; each tool sweeps once (the common case every interval);
2. stop 100: the 100 oldest servers are due; the culler stops them (``--max-age`` between
   their age and the others'); they are started again with a 1-hour lifespan (one hour = 1 s
   here) and the lifespan service stops them.

Run: ``python benchmarks/lifespan_sweep.py [--servers 1000] [--stop 100]``. Needs
``configurable-http-proxy`` (npm) and ``jupyterhub-idle-culler`` (pip). Prints a table and
ratios (culler / lifespan); it never passes or fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from jupyterhub.spawner import Spawner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


class NoProcessSpawner(Spawner):
    """A server with no process: start returns a shared responder's URL, poll says running."""

    _url: str | None = None
    _lock = threading.Lock()
    running = False

    @classmethod
    def _responder(cls) -> str:
        with cls._lock:
            if cls._url is None:
                httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
                threading.Thread(target=httpd.serve_forever, daemon=True).start()
                cls._url = f"http://127.0.0.1:{httpd.server_address[1]}"
        return cls._url

    async def start(self) -> str:
        self.running = True
        return self._responder()

    async def stop(self, now: bool = False) -> None:
        self.running = False

    async def poll(self) -> int | None:
        return None if self.running else 0

    def get_state(self) -> dict:
        return {"running": self.running} if self.running else {}

    def load_state(self, state: dict) -> None:
        self.running = bool(state.get("running"))


BENCH_SPAWNER = f"""
import sys
sys.path.insert(0, {str(REPO / "benchmarks")!r})
from lifespan_sweep import NoProcessSpawner
c.JupyterHub.spawner_class = NoProcessSpawner
c.JupyterHub.api_page_max_limit = 1000
c.JupyterHub.log_level = "WARN"
"""

CULLER_CONFIG = """
c.JupyterHub.services.append({{"name": "culler", "api_token": "{token}"}})
c.JupyterHub.load_roles.append({{"name": "culler", "services": ["culler"],
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}})
"""


def spawn_many(hub, names: list[tuple[str, str]], options: dict) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda us: hub.spawn(us[0], us[1], options), names))
    for user, server in names:
        hub.wait_ready(user, server, timeout=300)


async def lifespan_sweep(hub, api_url: str, hour_seconds: float, page_limit: int):
    from studio_spawner.lifespan.app import LifespanService

    app = LifespanService(api_url=api_url, api_token=hub.service_token, once=True,
                          hour_seconds=hour_seconds, page_limit=page_limit,
                          data_dir=tempfile.mkdtemp(), concurrency=10, max_hours=None)
    app.build()
    t0 = time.perf_counter()
    result = await app.sweeper.sweep()
    elapsed = time.perf_counter() - t0
    app.client.close()
    return elapsed, len(result.stopped)


async def culler_sweep(api_url: str, token: str, max_age: int, page_limit: int):
    from jupyterhub_idle_culler import cull_idle

    log = logging.getLogger("culler")
    t0 = time.perf_counter()
    await cull_idle(api_url, token, inactive_limit=10**7, logger=log, max_age=max_age,
                    concurrency=10, api_page_size=page_limit, remove_named_servers=False)
    return time.perf_counter() - t0


def count_running(hub, names: list[tuple[str, str]]) -> int:
    users = {u for u, _ in names}
    n = 0
    for user in users:
        servers = hub.api("GET", f"/users/{user}").json().get("servers") or {}
        n += sum(1 for u, s in names if u == user and s in servers and servers[s]["ready"])
    return n


def main() -> None:
    from tests.lifespan.fault_proxy import FaultProxy
    from tests.lifespan.hub import Hub

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--stop", type=int, default=100)
    parser.add_argument("--per-user", type=int, default=4)
    parser.add_argument("--page-limit", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="steady sweeps per tool and round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    culler_token = "culler-" + "0" * 24
    workdir = Path(tempfile.mkdtemp(prefix="lifespan-bench-"))
    hub = Hub(workdir, spawner=BENCH_SPAWNER, extra=CULLER_CONFIG.format(token=culler_token))
    print(f"hub in {workdir}", flush=True)
    hub.start()
    proxy = FaultProxy(hub.api_url.rsplit("/hub/api", 1)[0]).start()
    api = proxy.url + "/hub/api"
    try:
        names = [(f"u{i // args.per_user:04d}", "" if i % args.per_user == 0 else f"s{i % 4}")
                 for i in range(args.servers)]
        hub.api("POST", "/users", {"usernames": sorted({u for u, _ in names})})
        old, young = names[:args.stop], names[args.stop:]
        t0 = time.perf_counter()
        spawn_many(hub, old, {"lifespan_hours": 1000})
        time.sleep(8)
        young_start = datetime.now(timezone.utc)
        spawn_many(hub, young, {"lifespan_hours": 1000})
        print(f"started {len(names)} servers in {time.perf_counter() - t0:.0f}s", flush=True)

        rows = []
        loop = asyncio.new_event_loop()

        def measure(label: str, make_coro, repeat: int = 1) -> tuple:
            """Run ``repeat`` times; the median time and the requests of one run."""
            times, out = [], None
            proxy.reset()
            for _ in range(repeat):
                out = loop.run_until_complete(make_coro())
                times.append(out[0] if isinstance(out, tuple) else out)
            counts = {k: n // repeat for k, n in proxy.counts.items()}
            rows.append((label, statistics.median(times), proxy.total() // repeat, counts))
            return out

        for _ in range(2):  # interleaved, to spread any drift of the machine over both
            measure("lifespan: steady sweep",
                    lambda: lifespan_sweep(hub, api, 3600, args.page_limit), args.repeat)
            measure("culler:   steady sweep",
                    lambda: culler_sweep(api, culler_token, 10**7, args.page_limit), args.repeat)

        max_age = int((datetime.now(timezone.utc) - young_start).total_seconds()) + 3
        measure(f"culler:   stop {args.stop}",
                lambda: culler_sweep(api, culler_token, max_age, args.page_limit))
        culled = args.stop - count_running(hub, old)
        spawn_many(hub, old, {"lifespan_hours": 1})  # due 1 "hour" (1 s) after start
        time.sleep(2)
        _, stopped = measure(f"lifespan: stop {args.stop}",
                             lambda: lifespan_sweep(hub, api, 1.0, args.page_limit))
        still = count_running(hub, young)
        loop.close()
    finally:
        proxy.stop()
        hub.stop()

    print(f"\n{len(names)} servers, {len({u for u, _ in names})} users, page limit "
          f"{args.page_limit}; culler stopped {culled}, lifespan stopped {stopped}; "
          f"{still}/{len(young)} others still running\n")
    print(f"{'run':28} {'seconds':>8} {'requests':>9}  breakdown")
    for label, seconds, total, counts in rows:
        detail = ", ".join(f"{m} {k}: {n}" for (m, k), n in sorted(counts.items()))
        print(f"{label:28} {seconds:8.2f} {total:9d}  {detail}")
    by: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for label, seconds, total, _ in rows:
        tool, phase = (x.strip() for x in label.split(":"))
        by.setdefault(phase, {}).setdefault(tool, []).append((seconds, total))
    print("\nratios (culler / lifespan):")
    for phase, tools in by.items():
        cs, cn = (statistics.mean(x) for x in zip(*tools["culler"]))
        ls, ln = (statistics.mean(x) for x in zip(*tools["lifespan"]))
        print(f"  {phase:14} time {cs / ls:5.2f}x   requests {cn / max(ln, 1):5.2f}x")


if __name__ == "__main__":
    main()
