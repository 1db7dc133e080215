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
