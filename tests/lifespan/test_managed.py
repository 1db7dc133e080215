"""The service as the hub runs it: ``lifespan_service()`` + ``lifespan_role()`` as documented."""

from __future__ import annotations

import pytest
import requests

from .conftest import _have_chp
from .hub import Hub, wait_for

pytestmark = pytest.mark.skipif(not _have_chp(), reason="configurable-http-proxy missing")


def test_hub_managed_service_stops_and_serves(tmp_path) -> None:
    hub = Hub(tmp_path, managed_args=["--hour-seconds=3", "--interval=0.5"]).start()
    try:
        hub.add_user("mia")
        hub.spawn("mia", "m", {"lifespan_hours": 1})
        hub.spawn("mia", "", {"lifespan_hours": 40})
        hub.wait_ready("mia", "m")
        hub.wait_ready("mia")
        metrics = hub.public_url + "/services/lifespan/metrics"
        wait_for(lambda: requests.get(metrics, timeout=5).ok, 30, what="service via proxy")
        wait_for(lambda: hub.is_gone("mia", "m"), 30, what="mia/m stopped")
        assert hub.is_ready("mia")
        token = hub.user_token("mia")
        r = requests.get(hub.public_url + "/services/lifespan/api/studios",
                         headers={"Authorization": f"token {token}"}, timeout=10)
        assert r.status_code == 200
        assert [s["server"] for s in r.json()["studios"]] == [""]
        assert (tmp_path / "lifespan-data" / "cookie_secret").exists()
    finally:
        hub.stop_server("mia")
        hub.stop()


HOME = """
from studio_spawner.home import configure_studio_home
configure_studio_home(c)
c.StudioSpawner.lifespan_hour_seconds = 5
c.StudioSpawner.lifespan_default_hours = 2
c.StudioSpawner.lifespan_max_hours = 6
"""


def test_policy_from_the_hub_and_extensions_from_the_studio_home(tmp_path) -> None:
    """One policy (c.StudioSpawner.lifespan_*): the service reads it from the hub, and an
    Extend on the studio home (in the hub) reaches the service through the extensions file."""
    hub = Hub(tmp_path, extra=HOME, managed_args=["--interval=0.5", "--policy-from-hub",
                                                  "--max-hours=1000", "--hour-seconds=3600"])
    hub.start()
    try:
        hub.add_user("kim")
        hub.spawn("kim", "extended", {"lifespan_hours": 1})
        hub.wait_ready("kim", "extended")
        session = requests.Session()
        session.get(hub.public_url + "/hub/login", timeout=10)
        session.post(hub.public_url + "/hub/login", timeout=10, data={
            "username": "kim", "password": "x", "_xsrf": session.cookies.get("_xsrf", "")})
        xsrf = session.cookies.get("_xsrf", path="/hub/")
        page = session.post(hub.public_url + "/hub/studios/kim/extended/extend", timeout=10,
                            data={"_xsrf": xsrf, "hours": "2"})
        assert "extended by 2 h" in page.text, page.text[-2000:]
        for server, hours in (("short", 1), ("long", 5)):
            hub.spawn("kim", server, {"lifespan_hours": hours})
            hub.wait_ready("kim", server)
        too_much = session.post(hub.public_url + "/hub/studios/kim/long/extend", timeout=10,
                                data={"_xsrf": xsrf, "hours": "2"})
        assert "the maximum lifespan is 6 h" in too_much.text, "the hub's cap, not --max-hours"
        wait_for(lambda: hub.is_gone("kim", "short"), 20, what="kim/short stopped at 5 s")
        assert hub.is_ready("kim", "extended"), "its extension (2 h = 10 s) keeps it running"
        wait_for(lambda: hub.is_gone("kim", "extended"), 20, what="kim/extended stopped")
        assert hub.is_ready("kim", "long")
        page = session.get(hub.public_url + "/services/lifespan/", timeout=10)
        assert page.url.endswith("/hub/studios"), "the service's page is the studio home"
    finally:
        for server in ("short", "extended", "long"):
            hub.stop_server("kim", server)
        hub.stop()
