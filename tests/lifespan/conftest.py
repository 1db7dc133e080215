"""Fixtures: one real JupyterHub per session, one lifespan service process per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .fault_proxy import FaultProxy
from .hub import Hub, Lifespan

HOUR = 4.0  # seconds in a lifespan "hour" in these tests


def _have_chp() -> bool:
    return shutil.which("configurable-http-proxy") is not None


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not _have_chp():
        reason = "configurable-http-proxy is not installed (./dev test installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason=reason)  # in CI the line above fails instead
    hub = Hub(tmp_path_factory.mktemp("hub")).start()
    yield hub
    hub.stop()


@pytest.fixture
def servers(hub: Hub) -> Iterator[list[tuple[str, str]]]:
    """Servers a test starts (append ``(user, server)``); stopped afterwards."""
    started: list[tuple[str, str]] = []
    yield started
    for user, server in started:
        hub.stop_server(user, server)


@pytest.fixture
def spawn(hub: Hub, servers: list[tuple[str, str]]) -> Callable[..., None]:
    def spawn(user: str, server: str = "", options: dict | None = None,
              groups: list[str] = ()) -> None:
        hub.add_user(user, list(groups))
        hub.spawn(user, server, options)
        servers.append((user, server))
    return spawn


@pytest.fixture
def lifespan(hub: Hub, tmp_path: Path) -> Iterator[Callable[..., Lifespan]]:
    """Start the service with config overrides; one at a time, stopped after the test."""
    running: list[Lifespan] = []

    def start(data_dir: Path | None = None, **config: object) -> Lifespan:
        for svc in running:
            svc.stop()
        config.setdefault("hour_seconds", HOUR)
        svc = Lifespan(hub, data_dir or tmp_path / "lifespan", **config).start()
        running.append(svc)
        return svc

    yield start
    for svc in running:
        svc.stop()


@pytest.fixture
def fault_proxy(hub: Hub) -> Iterator[FaultProxy]:
    proxy = FaultProxy(hub.api_url.rsplit("/hub/api", 1)[0]).start()
    yield proxy
    proxy.stop()
