"""The lifespan service against a real JupyterHub with real (tiny) single-user servers.

Time unit: one lifespan "hour" is ``HOUR`` seconds (``hour_seconds``), nothing else changes.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime, timezone

import pytest
import requests

from studio_spawner.lifespan.studios import parse_time

from .conftest import HOUR
from .hub import Hub, wait_for

SVC = "/services/lifespan"


def seconds_until(server: dict, hours: float) -> float:
    """Seconds from now until ``started + hours``."""
    started = parse_time(server["started"])
    assert started is not None
    return started.timestamp() + hours * HOUR - datetime.now(timezone.utc).timestamp()


def sleep_until(server: dict, hours: float, margin: float = 0.0) -> None:
    time.sleep(max(seconds_until(server, hours) + margin, 0))


def wait_gone(hub: Hub, user: str, server: str = "", timeout: float = 15) -> None:
    wait_for(lambda: hub.is_gone(user, server), timeout, what=f"{user}/{server} stopped")


def api(hub: Hub, method: str, path: str, token: str, **kw: object) -> requests.Response:
    return requests.request(method, hub.public_url + SVC + path,
                            headers={"Authorization": f"token {token}"}, timeout=30, **kw)


def test_overdue_servers_stop_others_keep_running(hub, spawn, lifespan) -> None:
    """Default and named servers stop at their deadline, never before; the rest keep running."""
    spawn("ann", "", {"lifespan_hours": 2})
    spawn("ann", "short", {"lifespan_hours": 1})
    spawn("ann", "long", {"lifespan_hours": 50})
    spawn("ben", "", {"lifespan_hours": 50, "workspace": None})
    short = hub.wait_ready("ann", "short")
    default = hub.wait_ready("ann")
    hub.wait_ready("ann", "long")
    hub.wait_ready("ben")
    svc = lifespan()
    sleep_until(short, 1, -1.0)
    assert hub.is_ready("ann", "short"), "stopped before its deadline"
    wait_gone(hub, "ann", "short")
    assert seconds_until(short, 1) <= 0
    assert hub.is_ready("ann"), "the 2 h default server stopped early"
    sleep_until(default, 2, -1.0)
    assert hub.is_ready("ann")
    wait_gone(hub, "ann")
    assert hub.is_ready("ann", "long") and hub.is_ready("ben")
    log = svc.logs()
    assert re.search(r"Stopped ann/short \[20[24]\]: lifespan 1 h; started", log)
    assert re.search(r"Stopped ann \(default server\) \[20[24]\]: lifespan 2 h;", log)
    metrics = requests.get(svc.metrics_url, timeout=5).text
    assert re.search(r"^lifespan_studios_stopped_total [2-9]", metrics, re.M)
    assert "lifespan_sweep_duration_seconds_count" in metrics


def test_keep_running_default_and_bounds(hub, spawn, lifespan) -> None:
    """Keep running is honoured; a server without lifespan_hours gets the default; the admin
    maximum caps long lifespans; a lifespan below the minimum is raised to it."""
    spawn("cat", "keep", {"lifespan_hours": None})
    spawn("cat", "nokey", {"workspace": "w"})
    spawn("cat", "huge", {"lifespan_hours": 100})
    spawn("cat", "zero", {"lifespan_hours": 0})
    keep = hub.wait_ready("cat", "keep")
    nokey = hub.wait_ready("cat", "nokey")
    huge = hub.wait_ready("cat", "huge")
    zero = hub.wait_ready("cat", "zero")
    lifespan(allow_keep_running=True, default_hours=1, max_hours=2, min_hours=1)
    sleep_until(zero, 1, -1.0)
    assert hub.is_ready("cat", "zero")
    wait_gone(hub, "cat", "zero")
    wait_gone(hub, "cat", "nokey")
    assert seconds_until(nokey, 1) <= 0
    assert hub.is_ready("cat", "huge")
    wait_gone(hub, "cat", "huge")
    assert seconds_until(huge, 2) <= 0
    sleep_until(keep, 3)
    assert hub.is_ready("cat", "keep"), "keep running was not honoured"


def test_absolute_maximum_stops_keep_running(hub, spawn, lifespan) -> None:
    spawn("dan", "keep", {"lifespan_hours": None})
    keep = hub.wait_ready("dan", "keep")
    lifespan(allow_keep_running=True, absolute_max_hours=1)
    wait_gone(hub, "dan", "keep")
    assert seconds_until(keep, 1) <= 0


def test_group_policies(hub, spawn, lifespan) -> None:
    """gpu-users may keep running and run longer; others get the base maximum."""
    spawn("gpu1", "keep", {"lifespan_hours": None}, groups=["gpu-users"])
    spawn("gpu1", "long", {"lifespan_hours": 3}, groups=["gpu-users"])
    spawn("cpu1", "keep", {"lifespan_hours": None})
    spawn("cpu1", "long", {"lifespan_hours": 3})
    for user in ("gpu1", "cpu1"):
        for server in ("keep", "long"):
            hub.wait_ready(user, server)
    long_gpu = hub.server("gpu1", "long")
    lifespan(max_hours=1, group_policies={"gpu-users": {"max_hours": 24,
                                                        "allow_keep_running": True}})
    wait_gone(hub, "cpu1", "keep")
    wait_gone(hub, "cpu1", "long")
    assert hub.is_ready("gpu1", "keep") and hub.is_ready("gpu1", "long")
    wait_gone(hub, "gpu1", "long")
    assert seconds_until(long_gpu, 3) <= 0
    assert hub.is_ready("gpu1", "keep")


def test_extend_through_api_owner_admin_and_others(hub, spawn, lifespan, tmp_path) -> None:
    """The owner and an admin may extend within the maximum; another user gets 403; the
    extension survives a restart of the service and delays the stop."""
    spawn("eve", "work", {"lifespan_hours": 2})
    hub.add_user("mallory")
    hub.add_user("boss")
    work = hub.wait_ready("eve", "work")
    data = tmp_path / "data"
    lifespan(data, max_hours=4)
    eve, mallory, boss = (hub.user_token(u) for u in ("eve", "mallory", "boss"))

    listing = api(hub, "GET", "/api/studios", eve)
    assert listing.status_code == 200, listing.text
    [studio] = [s for s in listing.json()["studios"] if s["server"] == "work"]
    assert studio["lifespan_hours"] == 2 and studio["can_extend_hours"] == 2
    assert 0 < studio["hours_left"] <= 2

    assert api(hub, "POST", "/api/studios/work/extend?user=eve", mallory,
               json={"hours": 1}).status_code == 403
    assert api(hub, "GET", "/api/studios/work?user=eve", mallory).status_code == 403
    too_much = api(hub, "POST", "/api/studios/work/extend", eve, json={"hours": 3})
    assert too_much.status_code == 400 and "at most 2 h" in too_much.json()["message"]
    assert api(hub, "POST", "/api/studios/work/extend", eve, json={"hours": "x"}).status_code \
        == 400
    assert api(hub, "POST", "/api/studios/nope/extend", eve, json={"hours": 1}).status_code \
        == 404

    ok = api(hub, "POST", "/api/studios/work/extend", eve, json={"hours": 1})
    assert ok.status_code == 200, ok.text
    assert ok.json()["total_hours"] == 3
    by_admin = api(hub, "POST", "/api/studios/work/extend?user=eve", boss, json={"hours": 1})
    assert by_admin.status_code == 200, by_admin.text
    assert by_admin.json()["total_hours"] == 4 and by_admin.json()["can_extend_hours"] == 0

    lifespan(data, max_hours=4)  # restart: the extension is read back from the data dir
    after = api(hub, "GET", "/api/studios/work", eve).json()
    assert after["extension_hours"] == 2 and after["total_hours"] == 4
    sleep_until(work, 2, 1.5)
    assert hub.is_ready("eve", "work"), "stopped at the original deadline despite extension"
    sleep_until(work, 4, -1.0)
    assert hub.is_ready("eve", "work")
    wait_gone(hub, "eve", "work")


def test_unauthenticated_api_is_refused(hub, lifespan) -> None:
    lifespan()
    assert requests.get(hub.public_url + SVC + "/api/studios", timeout=10).status_code == 403


def test_warning_endpoint(hub, spawn, lifespan) -> None:
    """Within warning_minutes of its stop a studio reports warning: true (page and API)."""
    spawn("fay", "soon", {"lifespan_hours": 3})
    spawn("fay", "later", {"lifespan_hours": 60})
    hub.wait_ready("fay", "soon")
    hub.wait_ready("fay", "later")
    lifespan(warning_minutes=5 * 60)  # 5 "hours"
    token = hub.user_token("fay")
    soon = api(hub, "GET", "/api/studios/soon", token).json()
    later = api(hub, "GET", "/api/studios/later", token).json()
    assert soon["warning"] is True and 0 < soon["seconds_left"] <= 3 * HOUR
    assert later["warning"] is False


def browser_login(hub: Hub, user: str) -> requests.Session:
    """A browser-like session signed in to the hub with the DummyAuthenticator."""
    s = requests.Session()
    s.get(hub.public_url + "/hub/login", timeout=30)
    xsrf = s.cookies.get("_xsrf")
    r = s.post(hub.public_url + "/hub/login?next=/hub/home",
               data={"username": user, "password": "x", "_xsrf": xsrf}, timeout=30)
    assert r.ok, r.text
    return s


def test_extend_through_the_page_with_oauth(hub, spawn, lifespan) -> None:
    """A signed-in user follows the OAuth flow to the page and extends a studio with the
    form; another user cannot extend it through the page."""
    spawn("gil", "page", {"lifespan_hours": 2})
    hub.add_user("hal")
    hub.wait_ready("gil", "page")
    lifespan(max_hours=10, warning_minutes=3 * 60)
    s = browser_login(hub, "gil")
    page = s.get(hub.public_url + SVC + "/", timeout=30)
    assert page.status_code == 200 and "oauth" in " ".join(r.url for r in page.history)
    assert 'data-server="page"' in page.text and "stops in" in page.text  # the warning
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = s.post(hub.public_url + SVC + "/extend/page", data={"hours": "4", "_xsrf": xsrf},
               timeout=30)
    assert r.status_code == 200 and "extended by 4 hours" in r.text
    token = hub.user_token("gil")
    assert api(hub, "GET", "/api/studios/page", token).json()["total_hours"] == 6
    # without the xsrf field the cookie is not accepted for a POST
    r = s.post(hub.public_url + SVC + "/extend/page", data={"hours": "1"}, timeout=30,
               allow_redirects=False)
    assert r.status_code in (302, 403)
    assert api(hub, "GET", "/api/studios/page", token).json()["total_hours"] == 6

    other = browser_login(hub, "hal")
    page = other.get(hub.public_url + SVC + "/", timeout=30)
    assert page.status_code == 200 and 'data-server="page"' not in page.text
    xsrf_value = re.search(r'name="xsrf-token" content="([^"]+)"', page.text).group(1)
    r = other.post(hub.public_url + SVC + "/extend/page?user=gil",
                   data={"hours": "1", "_xsrf": xsrf_value}, timeout=30, allow_redirects=False)
    assert r.status_code == 403
    assert other.get(hub.public_url + SVC + "/?user=gil", timeout=30).status_code == 403
    assert api(hub, "GET", "/api/studios/page", token).json()["total_hours"] == 6


def test_more_servers_than_one_page(hub, spawn, lifespan, fault_proxy) -> None:
    users = [f"pag{i}" for i in range(7)]
    for user in users:
        spawn(user, "p", {"lifespan_hours": 1})
    for user in users:
        hub.wait_ready(user, "p")
    lifespan(api_url=fault_proxy.url + "/hub/api", page_limit=2)
    for user in users:
        wait_gone(hub, user, "p")
    assert fault_proxy.counts[("GET", "list users")] >= 4  # 7 users at 2 per page, per sweep


def test_hub_api_errors_and_timeouts_mid_sweep(hub, spawn, lifespan, fault_proxy) -> None:
    """Failing and hanging Hub API requests are retried with backoff; servers still stop."""
    for i in range(3):
        spawn(f"err{i}", "", {"lifespan_hours": 1})
    for i in range(3):
        hub.wait_ready(f"err{i}")
    fault_proxy.hang_seconds = 3
    svc = lifespan(api_url=fault_proxy.url + "/hub/api", api_timeout=1, api_backoff=0.1,
                   interval=1, page_limit=1)
    time.sleep(1)
    fault_proxy.fail_methods = {"DELETE"}
    fault_proxy.fail_next = 2
    fault_proxy.hang_next = 1
    for i in range(3):
        wait_gone(hub, f"err{i}", timeout=30)
    fault_proxy.fail_methods = None
    fault_proxy.fail_next = 3  # list requests fail too; the loop keeps going
    time.sleep(3)
    log = svc.logs()
    assert "503" in log and "retry" in log
    assert re.search(r"Timeout|599", log)
    metrics = requests.get(svc.metrics_url, timeout=5).text
    assert re.search(r'lifespan_hub_api_retries_total\{method="DELETE"\} [3-9]', metrics)
    assert svc.proc.poll() is None


def test_service_restarted_mid_lifespan(hub, spawn, lifespan, tmp_path) -> None:
    """Deadlines come from the hub's ``started``: a service down at the deadline stops the
    server as soon as it is back, and does not stop a server that still has time."""
    spawn("ida", "a", {"lifespan_hours": 1})
    spawn("ida", "b", {"lifespan_hours": 5})
    a = hub.wait_ready("ida", "a")
    b = hub.wait_ready("ida", "b")
    svc = lifespan(tmp_path / "d")
    svc.stop()
    sleep_until(a, 1, 0.5)
    assert hub.is_ready("ida", "a")  # nobody stopped it while the service was down
    lifespan(tmp_path / "d")
    wait_gone(hub, "ida", "a", timeout=10)
    assert seconds_until(b, 5) > 0 and hub.is_ready("ida", "b")


@pytest.mark.parametrize("path", ["/api/studios/~", "/api/studios/%7E"])
def test_default_server_in_api(hub, spawn, lifespan, path) -> None:
    spawn("jo", "", {"lifespan_hours": 30})
    hub.wait_ready("jo")
    lifespan()
    r = api(hub, "GET", path, hub.user_token("jo"))
    assert r.status_code == 200 and r.json()["server"] == "" and r.json()["lifespan_hours"] == 30


def test_stops_are_bounded_and_idempotent(hub, spawn, lifespan, fault_proxy) -> None:
    """At most ``concurrency`` stops run at once; 404 (already gone) and 202 (stopping) from
    the hub count as done, and a server still running is stopped at the next sweep."""
    users = [f"con{i}" for i in range(6)]
    for user in users:
        spawn(user, "c", {"lifespan_hours": 1})
    for user in users:
        hub.wait_ready(user, "c")
    fault_proxy.fail_methods = {"DELETE"}
    fault_proxy.answer_next = [404, 202]
    fault_proxy.delay = 0.4
    svc = lifespan(api_url=fault_proxy.url + "/hub/api", concurrency=2, interval=1)
    for user in users:
        wait_gone(hub, user, "c", timeout=30)
    assert fault_proxy.max_in_flight["DELETE"] == 2
    assert fault_proxy.counts[("DELETE", "stop server")] == 8  # 2 answered by the proxy
    log = svc.logs()
    assert "[404]" in log and "[202]" in log
    metrics = requests.get(svc.metrics_url, timeout=5).text
    assert not re.search(r"^lifespan_errors_total\{", metrics, re.M)


def test_injected_clock_in_process(hub, spawn, tmp_path) -> None:
    """With real hours and an injected clock, a 2 h studio survives 1 h and stops after 2 h."""
    import asyncio
    from datetime import timedelta

    from studio_spawner.lifespan.app import LifespanService

    spawn("kim", "clock", {"lifespan_hours": 2})
    started = parse_time(hub.wait_ready("kim", "clock")["started"])

    async def sweep(when: datetime) -> list[str]:
        app = LifespanService(api_url=hub.api_url, api_token=hub.service_token, once=True,
                              data_dir=str(tmp_path))
        app.clock = lambda: when
        app.build()
        try:
            return (await app.sweeper.sweep()).stopped
        finally:
            app.client.close()

    def sweep_at(when: datetime) -> list[str]:
        return asyncio.run(sweep(when))

    assert "kim/clock" not in sweep_at(started + timedelta(hours=2) - timedelta(seconds=1))
    assert hub.is_ready("kim", "clock")
    assert "kim/clock" in sweep_at(started + timedelta(hours=2))
    wait_gone(hub, "kim", "clock")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_service_quietly(hub, lifespan, sig) -> None:
    """Ctrl-C of `./dev run` (SIGINT to the process group) or the hub's SIGTERM: no traceback."""
    svc = lifespan()
    assert svc.proc is not None
    svc.proc.send_signal(sig)
    assert svc.proc.wait(10) == 0
    assert "Traceback" not in svc.logs() and "KeyboardInterrupt" not in svc.logs()
