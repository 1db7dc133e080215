"""End to end: a real hub and proxy, StudioSpawner, the devcluster's API server and kubelet."""

from __future__ import annotations

import json
import time

import jupyterhub
import pytest
import requests

from .studio_fixtures import BROKEN_IMAGE, STUDIO_IMAGE, home_file, spawn_failure, wait_for_server

JUPYTERHUB_6 = int(jupyterhub.__version__.split(".")[0]) >= 6
OPTIONS = {"name": "RNA {seq}", "template": "demo", "env": {"GREETING": "a{b}c"},
           "labels": {"team": "genomics"}, "lifespan_hours": 2,
           "init_script": "echo init ran > $HOME/init-ran"}


def pod(devcluster, name):
    return devcluster.request("GET", f"/api/v1/namespaces/default/pods/{name}")


def gone(devcluster, path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            devcluster.request("GET", path)
        except Exception:
            return True
        time.sleep(0.3)
    return False


def test_start_check_pod_reach_server_and_stop(studio_hub, devcluster):
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["ann"]})
    response = hub.api("POST", "/users/ann/servers/rna", json=OPTIONS)
    assert response.status_code in (201, 202), response.text
    model = wait_for_server(hub, "ann", "rna")
    assert model.get("ready"), f"not ready: {model}\n{hub.log.read_text()[-3000:]}"

    spec = pod(devcluster, "jupyter-ann--rna")
    main = spec["spec"]["containers"][0]
    assert main["image"] == STUDIO_IMAGE
    assert {"name": "GREETING", "value": "a{b}c"} in main["env"]
    assert spec["metadata"]["labels"]["team"] == "genomics"
    assert [c["name"] for c in spec["spec"]["initContainers"]] == [
        "studio-sync-envs", "studio-kernels"]
    secret = devcluster.request("GET", "/api/v1/namespaces/default/secrets/jupyter-ann--rna-files")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == spec["metadata"]["uid"]

    status = requests.get(f"{hub.url}/user/ann/rna/api/status",
                          headers={"Authorization": f"token {hub.token}"}, timeout=30)
    assert status.status_code == 200, status.text
    assert "started" in status.json()

    assert hub.api("DELETE", "/users/ann/servers/rna").status_code in (202, 204)
    assert gone(devcluster, "/api/v1/namespaces/default/pods/jupyter-ann--rna")
    assert gone(devcluster, "/api/v1/namespaces/default/secrets/jupyter-ann--rna-files")


def test_default_and_named_side_by_side_and_restart_reuses_options(studio_hub, devcluster):
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["bo"]})
    assert hub.api("POST", "/users/bo/server", json={"name": "Default"}).status_code < 300
    two = {**OPTIONS, "name": "Two"}
    assert hub.api("POST", "/users/bo/servers/two", json=two).status_code < 300
    assert wait_for_server(hub, "bo", "").get("ready")
    assert wait_for_server(hub, "bo", "two").get("ready")
    assert pod(devcluster, "jupyter-bo")["status"]["podIP"] != pod(
        devcluster, "jupyter-bo--two")["status"]["podIP"]

    hub.api("DELETE", "/users/bo/servers/two")
    assert gone(devcluster, "/api/v1/namespaces/default/pods/jupyter-bo--two")
    assert hub.api("POST", "/users/bo/servers/two").status_code < 300, "no body: saved options"
    assert wait_for_server(hub, "bo", "two").get("ready")
    env = pod(devcluster, "jupyter-bo--two")["spec"]["containers"][0]["env"]
    assert {"name": "GREETING", "value": "a{b}c"} in env
    hub.api("DELETE", "/users/bo/servers/two")
    hub.api("DELETE", "/users/bo/server")


def test_unknown_image_fails_fast(studio_hub):
    seconds, message = spawn_failure(
        studio_hub, "cy", "bad", {"name": "x", "image": BROKEN_IMAGE})
    assert seconds < 30, f"took {seconds:.1f} s"
    assert f"the image {BROKEN_IMAGE} could not be pulled" in message, message


# The init script and the conda build run after the image's envs are synced into a new home
# volume (tens of seconds on a loaded 2-core machine); failing fast means well before the hub's
# start timeout (120 s here), not waiting it out.
FAILS_BEFORE_TIMEOUT = 80


def test_failing_init_script_fails_fast_with_its_output(studio_hub):
    seconds, message = spawn_failure(
        studio_hub, "di", "init", {**OPTIONS, "init_script": "echo no-data-here >&2; exit 3"})
    assert seconds < FAILS_BEFORE_TIMEOUT, f"took {seconds:.1f} s"
    assert "no-data-here" in message, message


def test_failing_startup_step_fails_fast_with_its_message(studio_hub):
    seconds, message = spawn_failure(
        studio_hub, "ed", "conda", {**OPTIONS, "environment_yml": "dependencies: [numpy]\n"})
    assert seconds < FAILS_BEFORE_TIMEOUT, f"took {seconds:.1f} s"
    assert "Building your conda environment' failed (build failed)" in message, message


# --- hardening: what reaches the running studio, and what the hub refuses --------------------

LITERALS = {"PASSWORD": "pa$$word", "TOKEN": "$(JUPYTERHUB_API_TOKEN)", "BRACES": "a{b}c",
            "LINES": "one\ntwo"}


def test_env_values_reach_the_process_exactly_as_typed(studio_hub):
    """Kubernetes expands $(VAR) and turns $$ into $: the values are escaped for it."""
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["lit"]})
    script = "".join(f'printf %s "${name}" > "$HOME/env-{name}"\n' for name in LITERALS)
    options = {"name": "Literal", "template": "demo", "env": LITERALS, "init_script": script}
    response = hub.api("POST", "/users/lit/servers/env", json=options)
    assert response.status_code in (201, 202), response.text
    assert wait_for_server(hub, "lit", "env").get("ready"), hub.log.read_text()[-3000:]
    root = requests.get(f"{hub.url}/user/lit/env/api/contents/", timeout=30,
                        headers={"Authorization": f"token {hub.token}"}).json()
    home = "" if any(c["name"] == "env-TOKEN" for c in root["content"]) else "home/jovyan/"
    for name, value in LITERALS.items():  # the server's root is the home or /
        assert home_file(hub, "lit", "env", f"{home}env-{name}") == value, name
    hub.api("DELETE", "/users/lit/servers/env")


@pytest.mark.parametrize("body", [[], [1], "x", 3], ids=["empty-list", "list", "string", "number"])
def test_a_body_that_is_not_an_object_is_a_400(studio_hub, body):
    if JUPYTERHUB_6 and body == []:
        pytest.skip(reason="JupyterHub 6 itself reads an empty list as no body (start as saved)")
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["shape"]})
    response = hub.api("POST", "/users/shape/servers/odd", json=body)
    assert response.status_code == 400, response.text
    message = response.json()["message"]  # ours, or JupyterHub 6's own check
    assert "options:" in message or "Body must be a JSON object" in message
    assert hub.api("GET", "/users/shape").status_code == 200, "the user still loads"


@pytest.mark.parametrize("field", ["description", "environment_yml", "init_script"])
def test_lone_surrogates_are_a_400_naming_the_field(studio_hub, field):
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["sur"]})
    body = json.dumps({"name": "s", "template": "demo", field: "a\ud800b"})  # \ud800 escaped
    response = hub.api("POST", f"/users/sur/servers/{field.replace('_', '-')}", data=body)
    assert response.status_code == 400, response.text
    assert f"{field}:" in response.json()["message"]


def test_the_api_stores_the_normalised_options(studio_hub):
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["norm"]})
    body = {"name": " Norm ", "template": "demo", "lifespan_hours": "24", "disk_gib": "3",
            "env": {"SECRET": "s3cret"}}
    assert hub.api("POST", "/users/norm/servers/n", json=body).status_code in (201, 202)
    assert wait_for_server(hub, "norm", "n").get("ready")
    stored = hub.api("GET", "/users/norm").json()["servers"]["n"]["user_options"]
    assert stored["lifespan_hours"] == 24 and stored["disk_gib"] == 3 and stored["name"] == "Norm"
    assert "s3cret" not in str(stored), "env values are not in user_options"
    hub.api("DELETE", "/users/norm/servers/n")


@pytest.mark.skipif(not JUPYTERHUB_6, reason="PUT (add only) and PATCH are JupyterHub 6")
def test_options_stored_without_a_start_are_validated(studio_hub):
    hub = studio_hub
    hub.api("POST", "/users", json={"usernames": ["addo"]})
    body = {"name": " Added ", "template": "demo", "lifespan_hours": "5", "env": {"K": "s3cret"}}
    response = hub.api("PUT", "/users/addo/servers/a", json={"user_options": body})
    assert response.status_code == 201, response.text

    def stored_options() -> dict:
        model = hub.api("GET", "/users/addo?include_stopped_servers=1").json()
        return model["servers"]["a"]["user_options"]

    stored = stored_options()
    assert stored["lifespan_hours"] == 5 and stored["name"] == "Added"
    assert "s3cret" not in str(stored)
    bad = {"user_options": {**body, "lifespan_hours": 0}}
    response = hub.api("PATCH", "/users/addo/servers/a", json=bad)
    assert response.status_code == 400 and "lifespan_hours" in response.text
    assert stored_options() == stored
