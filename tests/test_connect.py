"""studio-connect, the proxy in front of web tools, with a real JupyterHub.

The hub (with configurable-http-proxy) starts each server as a local process with the same
JUPYTERHUB_* environment KubeSpawner gives a pod: the server is the studio-connect binary, in
front of a small tool (devcluster/images/files/connect_tool.py, also in the devcluster's tool
image). Users log in with their own hub login and open the studio as a browser does, through
the hub's OAuth flow.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from .connect_fixtures import CONNECT, need_go
from .hub_fixtures import Hub, free_ports, open_as_browser, start_hub

TOOL = Path(__file__).parents[1] / "devcluster" / "images" / "files" / "connect_tool.py"
OWNER = "ann"
# server name -> the template's base_path
SERVERS = {"shared": "strip", "private": "strip", "passed": "pass"}
# who opens which of ann's studios: the owner, a collaborator (a share of "shared" only), a
# user without a share, and the hub admin (whose role includes access:servers)
OPENS = {"ann": {"shared", "private"}, "ben": {"shared"}, "cal": set(),
         "admin": {"shared", "private"}}


def test_go_unit_tests():
    need_go()
    result = subprocess.run(["go", "test", "-count=1", "./..."], cwd=CONNECT,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "CGO_ENABLED": "0"})
    assert result.returncode == 0, result.stdout + result.stderr


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process exited with {process.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


@pytest.fixture(scope="module")
def tool_port() -> Iterator[int]:
    [port] = free_ports(1)
    process = subprocess.Popen([sys.executable, str(TOOL), str(port)])
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def hub(connect_binary: Path, tool_port: int, tmp_path_factory) -> Iterator[Hub]:
    """A hub whose servers are studio-connect in front of the test tool, ann's three studios
    running and "shared" shared with ben."""
    config = f"""
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{str(connect_binary)!r}]
c.Spawner.args = []
c.Spawner.http_timeout = 30
c.Spawner.start_timeout = 30
BASE_PATHS = {SERVERS!r}
c.Spawner.environment = {{
    "CONNECT_TOOL_PORT": "{tool_port}",
    "CONNECT_BASE_PATH": lambda spawner: BASE_PATHS.get(spawner.name, "strip"),
    "JUPYTERHUB_ACTIVITY_INTERVAL": "1",
    "CONNECT_AUTH_CACHE_SECONDS": "2",
}}
c.JupyterHub.load_roles[0]["scopes"] += ["shares", "tokens"]
"""
    for running in start_hub(tmp_path_factory.mktemp("connect-hub"), config):
        for user in OPENS:
            running.api("POST", f"/users/{user}")
        for name in SERVERS:
            response = running.api("POST", f"/users/{OWNER}/servers/{name}")
            assert response.status_code in (201, 202), response.text
        for name in SERVERS:
            deadline = time.monotonic() + 40
            while not running.api("GET", f"/users/{OWNER}").json()["servers"][name]["ready"]:
                assert time.monotonic() < deadline, running.log.read_text()[-3000:]
                time.sleep(0.3)
        share = running.api("POST", f"/shares/{OWNER}/shared", json={"user": "ben"})
        assert share.status_code == 200, share.text
        yield running
        for name in SERVERS:
            running.api("DELETE", f"/users/{OWNER}/servers/{name}")


def whoami(hub: Hub, session: requests.Session, server: str) -> requests.Response:
    return open_as_browser(session, f"{hub.url}/user/{OWNER}/{server}/whoami")


@pytest.mark.parametrize("user", sorted(OPENS))
def test_who_opens_which_studio(hub: Hub, user: str):
    session = hub.login(user)
    for server in ("shared", "private"):
        response = whoami(hub, session, server)
        if server in OPENS[user]:
            assert response.status_code == 200, (server, response.text)
            seen = response.json()
            assert seen["user"] == user, "the tool learns who is connected"
            assert seen["path"] == "/whoami", "the prefix is stripped"
            assert seen["prefix"] == f"/user/{OWNER}/{server}"
            assert f"jupyterhub-user-{OWNER}-{server}" not in seen["cookie"], (
                "the tool never sees the visitor's hub token"
            )
        else:
            # refused by the hub's authorize page, or by studio-connect for a token without
            # the studio's access scope: never an answer from the tool
            assert response.status_code == 403, (server, response.status_code, response.text)
            assert "application/json" not in response.headers.get("Content-Type", "")


def test_anonymous_visitors_are_sent_to_the_hub_login(hub: Hub):
    response = requests.get(f"{hub.url}/user/{OWNER}/shared/whoami", timeout=30)
    assert "/hub/login" in response.url
    assert "application/json" not in response.headers.get("Content-Type", "")
    first = requests.get(f"{hub.url}/user/{OWNER}/shared/whoami", timeout=30,
                         allow_redirects=False)
    assert first.status_code == 302 and "/hub/api/oauth2/authorize" in first.headers["Location"]
    posted = requests.post(f"{hub.url}/user/{OWNER}/shared/upload", data=b"x", timeout=30)
    assert posted.status_code == 401


def test_api_tokens_get_the_same_rules(hub: Hub):
    def token(user: str) -> str:
        reply = hub.api("POST", f"/users/{user}/tokens", json={})
        assert reply.status_code == 201, reply.text
        return reply.json()["token"]

    url = f"{hub.url}/user/{OWNER}/private/whoami"
    mine = requests.get(url, headers={"Authorization": f"token {token(OWNER)}"}, timeout=30)
    assert mine.status_code == 200 and mine.json()["user"] == OWNER
    theirs = requests.get(url, headers={"Authorization": f"token {token('cal')}"}, timeout=30)
    assert theirs.status_code == 403


def test_pass_keeps_the_prefix(hub: Hub):
    seen = whoami(hub, hub.login(OWNER), "passed").json()
    assert seen["path"] == f"/user/{OWNER}/passed/whoami" and seen["prefix"] is None


def _cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def test_websocket_round_trip(hub: Hub):
    session = hub.login("ben")
    assert whoami(hub, session, "shared").status_code == 200
    ws_url = hub.url.replace("http", "ws", 1) + f"/user/{OWNER}/shared/ws"

    async def talk(origin: str | None) -> list[str]:
        headers = {"Cookie": _cookie_header(session)}
        if origin:
            headers["Origin"] = origin
        connection = await websocket_connect(HTTPRequest(ws_url, headers=headers))
        replies = []
        for text in ("hello", "é" * 1000):
            await connection.write_message(text)
            replies.append(await connection.read_message())
        connection.close()
        return replies

    assert asyncio.run(talk(hub.url)) == ["echo: hello", "echo: " + "é" * 1000]
    with pytest.raises(HTTPClientError) as refused:
        asyncio.run(talk("http://elsewhere.example"))
    assert refused.value.code == 403


def test_responses_stream_without_buffering(hub: Hub):
    session = hub.login(OWNER)
    whoami(hub, session, "shared")
    started = time.monotonic()
    arrivals = []
    with session.get(f"{hub.url}/user/{OWNER}/shared/stream", stream=True, timeout=30) as reply:
        for _ in reply.iter_lines():
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 3
    assert arrivals[0] < arrivals[2] - 0.4, f"lines arrived together: {arrivals}"


def test_large_upload_streams_through(hub: Hub):
    session = hub.login(OWNER)
    whoami(hub, session, "shared")
    chunk, count = os.urandom(1 << 20), 64
    expected = hashlib.sha256(chunk * count).hexdigest()
    reply = session.post(f"{hub.url}/user/{OWNER}/shared/upload",
                         data=(chunk for _ in range(count)), timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"size": count << 20, "sha256": expected}


def test_activity_reaches_the_hub(hub: Hub):
    def last_activity() -> str:
        return hub.api("GET", f"/users/{OWNER}").json()["servers"]["passed"]["last_activity"]

    session = hub.login(OWNER)
    before = last_activity()
    time.sleep(1.1)
    whoami(hub, session, "passed")
    deadline = time.monotonic() + 15
    while last_activity() == before:
        assert time.monotonic() < deadline, "the studio's activity did not reach the hub"
        time.sleep(0.3)
    assert last_activity() > before


def _direct_env(tool_port: int, **extra: str) -> dict[str, str]:
    """The environment of a studio-connect process started by hand (no hub)."""
    [port] = free_ports(1)
    return {
        "PATH": os.environ.get("PATH", ""),
        "JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-ann-x",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/ann/x/oauth_callback",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/ann/x/",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/ann/x/",
        "JUPYTERHUB_USER": "ann", "CONNECT_TOOL_PORT": str(tool_port), **extra,
    }


def test_a_tool_that_never_listens_stops_the_proxy_with_the_reason(connect_binary: Path):
    [closed] = free_ports(1)
    env = _direct_env(closed, CONNECT_TOOL_WAIT_SECONDS="1")
    started = time.monotonic()
    result = subprocess.run([str(connect_binary)], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    last_line = result.stderr.strip().splitlines()[-1]
    assert f"the tool never listened on port {closed} (CONNECT_TOOL_PORT) within 1 s" in last_line


def test_health_and_sigterm(connect_binary: Path, tool_port: int):
    env = _direct_env(tool_port)
    port = int(env["JUPYTERHUB_SERVICE_URL"].split(":")[2].split("/")[0])
    process = subprocess.Popen([str(connect_binary)], env=env, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_for_port(port, process)
        deadline = time.monotonic() + 10
        health = f"http://127.0.0.1:{port}/_connect/health"
        while requests.get(health, timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert requests.get(f"http://127.0.0.1:{port}/elsewhere", timeout=5).status_code == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "SIGTERM" in process.stderr.read()


def test_missing_settings_are_named(connect_binary: Path):
    env = _direct_env(8080)
    del env["JUPYTERHUB_CLIENT_ID"]
    result = subprocess.run([str(connect_binary)], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1 and "JUPYTERHUB_CLIENT_ID is not set" in result.stderr
    result = subprocess.run([str(connect_binary), "--port=1"], env=_direct_env(8080),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "takes no arguments" in result.stderr
