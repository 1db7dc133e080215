"""On the real node, with the notebook image: its conda envs are synced into the home volume and
relocated there, the env with ipykernel is a kernel that runs from the synced copy, the env
without Python is not, and an image without any Python still runs the start-up steps (sh)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from studio_spawner.cli import load_config, offline_spawner, render_documents

from ..studio_fixtures import NOPYTHON_IMAGE, PUBLIC_HOST, STUDIO_IMAGE, wait_for_server


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


def test_image_envs_are_synced_relocated_and_the_python_one_is_a_kernel(studio_hub):
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["kim"]})
    response = hub.api("POST", "/users/kim/servers/envs",
                       json={"name": "Envs", "image": STUDIO_IMAGE})
    assert response.status_code < 300, response.text
    assert wait_for_server(hub, "kim", "envs").get("ready"), hub.log.read_text()[-3000:]
    base = f"{hub.url}/user/kim/envs/api"
    headers = {"Authorization": f"token {hub.token}"}
    specs = requests.get(f"{base}/kernelspecs", headers=headers, timeout=30).json()["kernelspecs"]
    assert "studio-python-data" in specs, sorted(specs)
    assert "studio-tools" not in specs, "an env without Python is no kernel"
    kernel = requests.post(f"{base}/kernels", json={"name": "studio-python-data"},
                           headers=headers, timeout=60).json()
    ws_url = f"{base}/kernels/{kernel['id']}/channels".replace("http://", "ws://")
    code = ("import subprocess, sys; print(sys.prefix); "
            "print(subprocess.run(['studio-hello'], capture_output=True, text=True).stdout); "
            "print(subprocess.run([sys.prefix + '/../tools/bin/studio-tools'], "
            "capture_output=True, text=True).stdout)")
    output = asyncio.run(run_code(ws_url, hub.token, code)).split("\n")
    assert output[0] == "/home/jovyan/.local/envs/python-data"
    # Prefix placeholders were rewritten for the home copy: the scripts run from there.
    assert "studio-hello from /home/jovyan/.local/envs/python-data" in output
    assert "studio-tools 1.0 at /home/jovyan/.local/envs/tools" in output
    hub.api("DELETE", "/users/kim/servers/envs")


async def test_an_image_without_python_runs_the_startup_steps_with_sh(devcluster, tmp_path):
    """The studio's own pod for busybox (no Python): steps skip with a message, the init script
    runs under sh, the command starts."""
    config_file = tmp_path / "config.py"
    config_file.write_text(f"""c.StudioSpawner.allowed_registries = ["{PUBLIC_HOST}/*"]
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
""")
    name = f"nopy-{uuid.uuid4().hex[:6]}"
    spawner = offline_spawner(load_config(str(config_file)), user=name)
    spawner.user_options = {"name": "No Python", "image": NOPYTHON_IMAGE,
                            "init_script": "echo init-ran > $HOME/init-ran"}
    documents = await render_documents(spawner)
    pod = next(d for d in documents if d["kind"] == "Pod")
    secret = next(d for d in documents if d["kind"] == "Secret")
    pod["metadata"]["name"] = secret["metadata"]["name"] = name
    pod["metadata"].pop("ownerReferences", None)
    secret["metadata"].pop("ownerReferences", None)
    for volume in pod["spec"]["volumes"]:
        if volume.get("secret"):
            volume["secret"]["secretName"] = name
        if volume.get("persistentVolumeClaim"):  # an emptyDir home: no claim for this pod
            volume.pop("persistentVolumeClaim")
            volume["emptyDir"] = {}
    main = pod["spec"]["containers"][0]
    argv = [*(main.get("command") or []), *(main.get("args") or [])]
    serve = argv[:argv.index("--") + 1] + ["httpd", "-f", "-p", "8888"]
    main["command"], main["args"] = serve[:1], serve[1:]
    devcluster.request("POST", "/api/v1/namespaces/default/secrets", secret)
    devcluster.request("POST", "/api/v1/namespaces/default/pods", pod)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = devcluster.request("GET", f"/api/v1/namespaces/default/pods/{name}")
            if status["status"].get("phase") in ("Running", "Failed"):
                break
            await asyncio.sleep(0.5)
        assert status["status"]["phase"] == "Running", status["status"]
        for init in status["status"]["initContainerStatuses"]:
            assert init["state"]["terminated"]["exitCode"] == 0, init
        kubectl = [str(devcluster.bin_dir / "kubectl"), "--kubeconfig",
                   str(devcluster.kubeconfig), "-n", "default"]
        logs = subprocess.run([*kubectl, "logs", name, "-c", "studio-sync-envs"],
                              capture_output=True, text=True, timeout=60).stdout
        assert "skipped: no Python 3.8+ interpreter in the image" in logs, logs
        home = subprocess.run([*kubectl, "exec", name, "--", "sh", "-c", "cat $HOME/init-ran"],
                              capture_output=True, text=True, timeout=60)
        assert home.stdout.strip() == "init-ran", home.stderr
    finally:
        devcluster.request("DELETE", f"/api/v1/namespaces/default/pods/{name}")
        devcluster.request("DELETE", f"/api/v1/namespaces/default/secrets/{name}")
