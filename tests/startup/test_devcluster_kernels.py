"""On the devcluster: an image with two conda envs gives a studio with both kernels, and a
kernel started through the single-user server runs from the synced $HOME/.local/envs copy."""

from __future__ import annotations

import asyncio
import json
import uuid

import requests
import yaml
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from ..studio_fixtures import wait_for_server
from .conftest import _solve_install

IMAGE = "devcluster.local/two-envs:1.0"


def add_two_env_image(studio_images, channel, tmp_path) -> None:
    root = tmp_path / "two-envs"
    for env in ("alpha", "beta"):
        prefix = root / "opt" / "conda" / "envs" / env
        asyncio.run(_solve_install(channel, ["python", "ipykernel"], prefix, tmp_path / "cache"))
    images = yaml.safe_load(studio_images.read_text())
    demo = images["images"]["devcluster.local/studio"]
    images["images"]["devcluster.local/two-envs"] = {"path": str(root), "env": demo["env"]}
    studio_images.write_text(yaml.safe_dump(images))


async def run_code(url: str, token: str, code: str) -> str:
    """Execute code in a kernel over the Jupyter websocket protocol; return its stdout."""
    request = HTTPRequest(url, headers={"Authorization": f"token {token}"})
    socket = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    socket.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    output = ""
    while True:
        message = json.loads(await asyncio.wait_for(socket.read_message(), 60))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            output += message["content"]["text"]
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            socket.close()
            return output


def test_both_image_envs_are_kernels_running_from_home(
    studio_hub, studio_images, channel, tmp_path
):
    add_two_env_image(studio_images, channel, tmp_path)
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["kim"]})
    response = hub.api("POST", "/users/kim/servers/envs", json={"name": "Envs", "image": IMAGE})
    assert response.status_code < 300, response.text
    assert wait_for_server(hub, "kim", "envs").get("ready"), hub.log.read_text()[-3000:]
    base = f"{hub.url}/user/kim/envs/api"
    headers = {"Authorization": f"token {hub.token}"}
    specs = requests.get(f"{base}/kernelspecs", headers=headers, timeout=30).json()["kernelspecs"]
    assert {"studio-alpha", "studio-beta"} <= set(specs), sorted(specs)
    assert specs["studio-beta"]["spec"]["display_name"] == "Python 3 (env: beta)"
    kernel = requests.post(f"{base}/kernels", json={"name": "studio-alpha"}, headers=headers,
                           timeout=60).json()
    ws_url = f"{base}/kernels/{kernel['id']}/channels".replace("http://", "ws://")
    prefix = asyncio.run(run_code(ws_url, hub.token, "import sys; print(sys.prefix)"))
    assert prefix.strip() == "/home/jovyan/.local/envs/alpha"
    hub.api("DELETE", "/users/kim/servers/envs")
