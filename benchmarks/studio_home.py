"""Studio home render time with 200 studios in a workspace, against the stock home, same run.

One real hub (no cluster: studios are added, not started). A member of the workspace
"genomics" adds 200 studios through the studio home's New form. Then, N times each:

- the stock JupyterHub home (``/hub/home``) of that member, which lists their 200 servers;
- the studio home's Mine view of that member (the same 200 studios);
- the Workspace view of a workspace admin (200 members' studios, rights checked per row).

Times are the hub's own request times (its access log), so they are server-side only.

    python benchmarks/studio_home.py [N]
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hub_fixtures import Hub, start_hub  # noqa: E402

STUDIOS = 200
CONFIG = """
from studio_spawner.home import configure_studio_home
from studio_spawner.sharing import configure_workspace_sharing
c.JupyterHub.authenticator_class = "studio_spawner.auth.WorkspaceDummyAuthenticator"
c.WorkspaceAuthenticator.workspaces = {"genomics": {"ann": "launch", "eve": "admin"}}
configure_workspace_sharing(c)
configure_studio_home(c)
c.JupyterHub.named_server_limit_per_user = 0
"""
LOG_LINE = re.compile(r"\] 200 GET (?P<path>\S+) \((?P<user>[^@]+)@[^)]*\) (?P<ms>[0-9.]+)ms")


def add_studios(hub: Hub, user: str, count: int) -> None:
    session = hub.login(user)
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    for n in range(count):
        response = session.post(f"{hub.url}/hub/studios/new", allow_redirects=False, timeout=60,
                                data={"_xsrf": xsrf, "name": f"Study {n:03d}",
                                      "workspace": "genomics", "environment_source": "template",
                                      "template": "python", "action": "add"})
        assert response.status_code == 302, response.text[-500:]


def server_times(log: Path, path: str, user: str) -> list[float]:
    return [float(m["ms"]) for m in LOG_LINE.finditer(log.read_text())
            if m["path"] == path and m["user"] == user]


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        running = start_hub(Path(tmp), CONFIG)
        hub = next(running)
        try:
            measure(hub, rounds)
        finally:
            running.close()  # stops the hub


def measure(hub: Hub, rounds: int) -> None:
    """Add the studios, load each page ``rounds`` times, print medians and ratios."""
    t0 = time.perf_counter()
    add_studios(hub, "ann", STUDIOS)
    print(f"added {STUDIOS} studios in {time.perf_counter() - t0:.1f} s")
    cases = [("ann", "/hub/home", "stock home (ann's 200 servers)"),
             ("ann", "/hub/studios?view=mine", "studio home, Mine (200)"),
             ("eve", "/hub/studios?view=workspace", "studio home, Workspace (200)")]
    sessions = {user: hub.login(user) for user in ("ann", "eve")}
    for user, path, _ in cases:
        page = sessions[user].get(hub.url + path, timeout=60)
        assert page.ok and (path == "/hub/home" or page.text.count("studio-row") == STUDIOS)
        for _ in range(rounds):
            sessions[user].get(hub.url + path, timeout=60)
    time.sleep(0.5)  # the last log lines
    medians = {}
    for user, path, label in cases:
        times = server_times(hub.log, path, user)[1:]  # the first warms caches
        medians[path] = statistics.median(times)
        print(f"{label:34} median {medians[path]:7.1f} ms  p90 "
              f"{statistics.quantiles(times, n=10)[-1]:7.1f} ms  ({len(times)} requests)")
    stock = medians["/hub/home"]
    for _, path, label in cases[1:]:
        print(f"{label:34} {medians[path] / stock:5.2f}× the stock home")

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
