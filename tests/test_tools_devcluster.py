"""Web tool studios on the devcluster's real node: a real hub and proxy, StudioSpawner, and pods.

The devcluster's images (devcluster/images):
- TOOL_IMAGE: python3 with tornado and /opt/tool/connect_tool.py; its own CMD is the seed's
  example, `sh -c 'exec python3 -m http.server $CONNECT_TOOL_PORT …'`;
- STATIC_IMAGE: no Python and no shell but busybox (static), and /srv/index.html;
- CONNECT_IMAGE: the studio-connect binary as its ENTRYPOINT (images/connect).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .hub_fixtures import Hub, open_as_browser, start_hub
from .studio_fixtures import PUBLIC_HOST, studio_hub_config, wait_for_server
from .test_e2e_devcluster import gone, pod, spawn_failure

CONNECT_IMAGE = f"{PUBLIC_HOST}/studio-connect:1"
TOOL_IMAGE = f"{PUBLIC_HOST}/tool:1"
STATIC_IMAGE = f"{PUBLIC_HOST}/nopython:1"
GRACE_SECONDS = 10  # wide enough apart from a polite stop (several seconds under load)
SEED_CMD = ["/bin/sh", "-c",
            'exec python3 -m http.server "$CONNECT_TOOL_PORT" --bind 127.0.0.1']
HTTP_SERVER = "python3 -m http.server $CONNECT_TOOL_PORT --bind 127.0.0.1"


def tool_templates() -> list[dict]:
    python = {"image": TOOL_IMAGE, "kind": "tool"}
    return [
        {"id": "ws", "display_name": "WebSocket tool", **python, "base_path": "pass",
         "command": ["python3", "/opt/tool/connect_tool.py", "$(CONNECT_TOOL_PORT)"]},
        {"id": "static", "display_name": "No Python", "image": STATIC_IMAGE, "kind": "tool",
         "command": ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:$(CONNECT_TOOL_PORT)",
                     "-h", "/srv"]},
        {"id": "web", "display_name": "Web server", **python, "command": HTTP_SERVER},
        {"id": "stubborn", "display_name": "Ignores SIGTERM", **python,
         "command": ["/bin/sh", "-c", f"trap '' TERM; exec {HTTP_SERVER}"]},
        {"id": "never", "display_name": "Never listens", **python, "command": ["sleep", "600"]},
        {"id": "crash", "display_name": "Crashes", **python,
         "command": ["/bin/sh", "-c", "echo the-app-is-missing >&2; exit 2"]},
    ]


@pytest.fixture(scope="module")
def tool_hub(devcluster, tmp_path_factory) -> Iterator[Hub]:
    config = studio_hub_config(devcluster) + f"""
c.StudioSpawner.templates = c.StudioSpawner.templates + {tool_templates()!r}
c.StudioSpawner.allow_custom_tools = True
c.StudioSpawner.connect_image = {CONNECT_IMAGE!r}
c.StudioSpawner.connect_tool_wait_seconds = 10  # (the kubelet's events may lag seconds)
c.StudioSpawner.termination_grace_period_seconds = {GRACE_SECONDS}
c.JupyterHub.load_roles[0]["scopes"].append("shares")
"""
    env = {"KUBECONFIG": str(devcluster.kubeconfig)}
    yield from start_hub(tmp_path_factory.mktemp("tool-hub"), config, env=env)


def start(hub: Hub, user: str, server: str, options: dict) -> dict:
    hub.api("POST", "/users", json={"usernames": [user]})
    response = hub.api("POST", f"/users/{user}/servers/{server}", json=options)
    assert response.status_code in (201, 202), response.text
    model = wait_for_server(hub, user, server)
    assert model.get("ready"), f"not ready: {model}\n{hub.log.read_text()[-3000:]}"
    return model


def stop(hub: Hub, devcluster, user: str, server: str) -> float:
    """Stop a studio; the seconds until its pod is gone."""
    started = time.monotonic()
    hub.api("DELETE", f"/users/{user}/servers/{server}")
    assert gone(devcluster, f"/api/v1/namespaces/default/pods/jupyter-{user}--{server}", 60)
    return time.monotonic() - started


def test_the_seed_example_image_starts_from_the_form(tool_hub, devcluster):
    hub = tool_hub
    session = hub.login("ann")
    url = f"{hub.url}/hub/spawn/ann/seed"
    session.get(url, timeout=30)
    session.post(url, timeout=60, data={
        "_xsrf": session.cookies.get("_xsrf", ""), "name": "Seed example",
        "environment_source": "custom", "image": TOOL_IMAGE, "kind": "tool",
        "lifespan_hours": "2", "private": "false"})
    model = wait_for_server(hub, "ann", "seed")
    assert model.get("ready"), f"not ready: {model}\n{hub.log.read_text()[-3000:]}"
    spec = pod(devcluster, "jupyter-ann--seed")["spec"]
    tool, connect = spec["containers"]
    assert "command" not in tool and "args" not in tool, "the image's own CMD runs"
    assert connect["image"] == CONNECT_IMAGE and not spec.get("initContainers")
    page = open_as_browser(session, f"{hub.url}/user/ann/seed/")
    assert page.status_code == 200 and "Directory listing for /" in page.text
    stop(hub, devcluster, "ann", "seed")


def test_websocket_tool_with_its_base_path_and_who_gets_in(tool_hub, devcluster):
    hub = tool_hub
    start(hub, "ann", "ws", {"name": "WS", "template": "ws"})
    hub.api("POST", "/users", json={"usernames": ["ben", "cy"]})
    share = hub.api("POST", "/shares/ann/ws", json={"user": "ben"})
    assert share.status_code == 200, share.text
    owner = hub.login("ann")
    seen = open_as_browser(owner, f"{hub.url}/user/ann/ws/whoami").json()
    assert seen["path"] == "/user/ann/ws/whoami" and seen["user"] == "ann"
    assert open_as_browser(hub.login("ben"), f"{hub.url}/user/ann/ws/whoami").json()[
        "user"] == "ben", "a collaborator (share) gets in"
    assert open_as_browser(hub.login("cy"), f"{hub.url}/user/ann/ws/whoami").status_code == 403
    anonymous = requests.get(f"{hub.url}/user/ann/ws/whoami", timeout=30)
    assert "/hub/login" in anonymous.url

    async def echo() -> str:
        cookies = "; ".join(f"{c.name}={c.value}" for c in owner.cookies)
        ws_url = hub.url.replace("http", "ws", 1) + "/user/ann/ws/ws"
        connection = await websocket_connect(HTTPRequest(ws_url, headers={"Cookie": cookies}))
        await connection.write_message("ping")
        reply = await connection.read_message()
        connection.close()
        return reply

    assert asyncio.run(echo()) == "echo: ping"
    assert stop(hub, devcluster, "ann", "ws") < GRACE_SECONDS, "SIGTERM stopped the tool"


def test_an_image_without_python(tool_hub, devcluster):
    hub = tool_hub
    start(hub, "ann", "static", {"name": "Static", "template": "static"})
    page = open_as_browser(hub.login("ann"), f"{hub.url}/user/ann/static/")
    assert page.status_code == 200 and "static tool" in page.text
    stop(hub, devcluster, "ann", "static")


def test_a_tool_that_ignores_sigterm_is_killed_after_the_grace_period(tool_hub, devcluster):
    hub = tool_hub
    start(hub, "dee", "web", {"name": "Web", "template": "web"})
    polite = stop(hub, devcluster, "dee", "web")
    start(hub, "dee", "stubborn", {"name": "Stubborn", "template": "stubborn"})
    stubborn = stop(hub, devcluster, "dee", "stubborn")
    assert polite < GRACE_SECONDS - 1 < stubborn, (polite, stubborn)
    assert stubborn < GRACE_SECONDS + 15


def progress_messages(hub: Hub, user: str, server: str, options: dict) -> tuple[float, list]:
    """Start a studio and read its progress stream meanwhile, as the spawn page does; return
    the seconds until the spawn ended and the progress messages."""
    hub.api("POST", "/users", json={"usernames": [user]})
    started = time.monotonic()
    spawn = threading.Thread(
        target=hub.api, args=("POST", f"/users/{user}/servers/{server}"), kwargs={"json": options})
    spawn.start()
    messages: list[str] = []
    url = f"{hub.url}/hub/api/users/{user}/servers/{server}/progress"
    while spawn.is_alive() or not messages:
        with requests.get(url, headers={"Authorization": f"token {hub.token}"}, stream=True,
                          timeout=60) as stream:
            if stream.status_code == 200:
                for line in stream.iter_lines(decode_unicode=True):
                    if line.startswith("data:"):
                        messages.append(json.loads(line[5:])["message"])
                break
        time.sleep(0.1)
    spawn.join()
    return time.monotonic() - started, messages


def test_a_tool_that_never_listens_fails_fast(tool_hub):
    seconds, messages = progress_messages(tool_hub, "eve", "never",
                                          {"name": "x", "template": "never"})
    assert seconds < 40, f"took {seconds:.1f} s: {messages}"
    waiting = [m for m in messages if m.startswith("Waiting for the tool to listen on port")]
    assert waiting, "\n".join(messages)
    assert "never listened on port" in messages[-1], messages


def test_a_tool_that_exits_fails_fast_with_its_output(tool_hub):
    seconds, message = spawn_failure(tool_hub, "fay", "crash", {"name": "x", "template": "crash"})
    assert seconds < 30, f"took {seconds:.1f} s"
    assert "the tool failed with exit code 2" in message and "the-app-is-missing" in message


def test_a_person_starts_a_tool_from_the_form_in_a_browser(tool_hub, devcluster):
    """Chromium: the form shows tool templates and the custom tool choice; the spawn ends on
    the tool's own page, after the hub's OAuth login through studio-connect."""
    from playwright import sync_api as playwright

    from .test_browser import ARTIFACTS, logged_in_page

    hub = tool_hub
    with playwright.sync_playwright() as p:
        browser, page = logged_in_page(p, hub, "gus", height=1400)
        page.goto(f"{hub.url}/hub/spawn/gus/browsertool")
        assert page.is_visible("text=web tool"), "tool templates carry a badge"
        page.check("input[name=environment_source][value=custom]")
        assert page.is_visible("input[name=kind][value=tool]")
        page.check("input[name=kind][value=tool]")
        assert page.is_visible(".studio-conda-off"), "no Conda packages for a tool"
        page.screenshot(path=str(ARTIFACTS / "spawn-form-tool.png"), full_page=True)
        page.check("input[name=environment_source][value=template]")
        page.check("input[name=template][value=web]")
        page.click("summary")
        assert page.is_visible(".studio-tool-off"), "the init script does not apply"
        page.fill("#studio-name", "Web from a browser")
        page.click("button[type=submit]")
        page.wait_for_url("**/user/gus/browsertool/**", timeout=90_000)
        page.wait_for_selector("text=Directory listing for /", timeout=30_000)
        browser.close()
    pod_spec = pod(devcluster, "jupyter-gus--browsertool")["spec"]
    assert [c["name"] for c in pod_spec["containers"]] == ["notebook", "studio-connect"]
    stop(hub, devcluster, "gus", "browsertool")
