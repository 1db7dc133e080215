"""Pod building: the studio's pieces, field by field, and user text arriving unchanged."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from traitlets.config import Config

from studio_spawner.cli import offline_spawner, render_documents
from studio_spawner.pod import apply_studio, files_secret, merge_env

from .conftest import CATALOG_CONFIG, IMAGE


def config(**extra) -> Config:
    c = Config()
    for key, value in {**CATALOG_CONFIG, **extra}.items():
        setattr(c.StudioSpawner, key, value)
    c.KubeSpawner.environment = {"ADMIN_ONLY": "a", "SHARED": "admin-{username}"}
    c.KubeSpawner.extra_labels = {"owner": "{username}"}
    return c


async def render(options: dict, user: str = "alice", server: str = "", **extra) -> dict:
    spawner = offline_spawner(config(**extra), user, server)
    spawner.user_options = options
    try:
        pod, secret, *rest = await render_documents(spawner)
    finally:
        await spawner.api.api_client.close()
    return {"pod": pod, "secret": secret, "rest": rest, "spawner": spawner}


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


OPTIONS = {
    "name": "RNA {seq}",
    "template": "python",
    "env": {"SHARED": "a{b}c", "MINE": "{username}"},
    "labels": {"team": "genomics"},
    "data": [{"name": "genomes"}, {"name": "scratch", "writable": True}],
    "resources": "gpu",
    "init_script": "echo {hello} $HOME",
    "environment_yml": "channels: [conda-forge]\ndependencies:\n  - numpy\n",
    "private": True,
}


async def test_main_container_gets_image_env_and_wrapper():
    pod = (await render(OPTIONS))["pod"]
    main = pod["spec"]["containers"][0]
    assert main["image"] == IMAGE
    env = env_of(main)
    assert env["SHARED"] == "a{b}c", "session env overrides admin env, braces untouched"
    assert env["MINE"] == "{username}", "user text is never expanded as a template"
    assert env["ADMIN_ONLY"] == "a"
    assert env["STUDIO_FILES"] == "/etc/studio"
    assert "command" not in main, "the image's ENTRYPOINT (tini -g -- start.sh) still runs"
    assert main["args"][:5] == ["/bin/sh", "/etc/studio/studio_startup.sh", "run", "--",
                                "jupyterhub-singleuser"]
    assert main["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # ready once the server listens (after the init script): a failing init script fails the
    # start itself instead of the hub waiting for a server that is gone
    assert main["readinessProbe"]["tcpSocket"] == {"port": "notebook-port"}
    assert any(p["name"] == "notebook-port" for p in main["ports"])


async def test_resources_from_the_preset():
    main = (await render(OPTIONS))["pod"]["spec"]["containers"][0]
    assert float(main["resources"]["limits"]["cpu"]) == 4.0
    assert main["resources"]["limits"]["memory"] == str(16 * 1024**3)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"


async def test_labels_annotations_and_grace_period():
    pod = (await render(OPTIONS))["pod"]
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "genomics"
    assert labels["owner"] == "alice"
    assert labels["studio.jupyter.org/template"] == "python"
    assert labels["studio.jupyter.org/private"] == "true"
    assert not any(k.startswith("studio.jupyter.org") for k in pod["metadata"].get(
        "annotations") or {}), "no copy of the options (env values, init script) on the pod"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30


async def test_data_mounts_read_only_unless_writable():
    spec = (await render(OPTIONS))["pod"]["spec"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/workspace/data/genomes"]["readOnly"] is True
    assert mounts["/workspace/data/scratch"]["readOnly"] is False
    assert mounts["/etc/studio"]["readOnly"] is True
    claims = {v["name"]: v.get("persistentVolumeClaim") for v in spec["volumes"]}
    assert claims["data-genomes"] == {"claimName": "studio-data-genomes-ro", "readOnly": True}
    assert claims["data-scratch"] == {"claimName": "scratch-rw", "readOnly": False}


async def test_init_containers_run_each_startup_step():
    spec = (await render(OPTIONS))["pod"]["spec"]
    steps = [c["name"] for c in spec["initContainers"]]
    assert steps == ["studio-sync-envs", "studio-user-env", "studio-kernels"]
    for container in spec["initContainers"]:
        assert container["image"] == IMAGE
        assert container["command"][:2] == ["/bin/sh", "/etc/studio/studio_startup.sh"]
        assert any(m["mountPath"] == "/etc/studio" for m in container["volumeMounts"])
    no_conda = {**OPTIONS, "environment_yml": ""}
    steps = [c["name"] for c in (await render(no_conda))["pod"]["spec"]["initContainers"]]
    assert "studio-user-env" not in steps


async def test_files_secret_carries_the_studio_files_unchanged():
    rendered = await render(OPTIONS, server="rna")
    secret = rendered["secret"]
    files = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert files["init.sh"] == "echo {hello} $HOME"
    environment = yaml.safe_load(files["environment.yml"])
    assert files["environment.yml"].startswith("# note: ipykernel was added")
    assert environment == {"channels": ["conda-forge"], "dependencies": ["numpy", "ipykernel"]}
    assert json.loads(files["options.json"])["name"] == "RNA {seq}"
    assert files["studio_startup.sh"].startswith("#!/bin/sh")
    assert secret["metadata"]["name"] == "jupyter-alice--rna-files"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Pod"
    volumes = {v["name"]: v for v in rendered["pod"]["spec"]["volumes"]}
    assert volumes["studio-files"]["secret"]["secretName"] == "jupyter-alice--rna-files"


async def test_home_volume_size_follows_the_disk_option():
    assert not (await render({**OPTIONS, "disk_gib": 25}))["rest"], "PVC only when storage is on"
    rendered = await render({**OPTIONS, "disk_gib": 25}, storage_pvc_ensure=True)
    [pvc] = rendered["rest"]
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "25Gi"


def test_merge_env_keeps_order_and_replaces_by_name():
    base = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert merge_env(base, [{"name": "A", "value": "x"}]) == [
        {"name": "B", "value": "2"}, {"name": "A", "value": "x"}
    ]


def test_apply_studio_does_not_mutate_its_input(catalog):
    from studio_spawner.options import parse_options
    from studio_spawner.pod import StartupSettings

    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "n", "image": "i"}]}}
    before = json.dumps(pod, sort_keys=True)
    options = parse_options({"name": "s", "template": "python"}, catalog)
    apply_studio(pod, options, [], files_secret="f",
                 startup=StartupSettings(installer="micromamba"), grace_seconds=5)
    assert json.dumps(pod, sort_keys=True) == before
    secret = files_secret("f", options, {"p.sh": "x"}, labels={})
    assert "ownerReferences" not in secret["metadata"]


@pytest.mark.parametrize("value", ["{", "}", "{0}", "{username}", "%(x)s", "$(HOME)"])
async def test_any_braces_round_trip(value):
    pod = (await render({**OPTIONS, "env": {"X": value}, "init_script": value}))["pod"]
    assert env_of(pod["spec"]["containers"][0])["X"] == value.replace("$", "$$")


async def test_env_values_arrive_literally():
    values = {"PASSWORD": "pa$$word", "TOKEN": "$(JUPYTERHUB_API_TOKEN)", "D": "$", "E": "$$("}
    pod = (await render({**OPTIONS, "env": values}))["pod"]
    env = env_of(pod["spec"]["containers"][0])
    for name, value in values.items():
        assert env[name] == value.replace("$", "$$"), "Kubernetes turns $$ into $"
    steps = {c["name"]: env_of(c) for c in pod["spec"]["initContainers"]}
    assert steps["studio-user-env"]["PASSWORD"] == "pa$$$$word", "the conda build sees them"
    assert "PASSWORD" not in steps["studio-kernels"], "the other steps do not need them"


async def test_init_containers_keep_the_admins_container_settings():
    c = config()
    spawner = offline_spawner(c, "alice", "")
    spawner.extra_container_config = {
        "envFrom": [{"configMapRef": {"name": "proxies"}}],
        "securityContext": {"runAsNonRoot": True},
        "readinessProbe": {"httpGet": {"path": "/", "port": 8888}},
    }
    spawner.user_options = OPTIONS
    try:
        pod, *_ = await render_documents(spawner)
    finally:
        await spawner.api.api_client.close()
    for container in pod["spec"]["initContainers"]:
        assert container["envFrom"] == [{"configMapRef": {"name": "proxies"}}]
        assert container["securityContext"]["runAsNonRoot"] is True
        assert "readinessProbe" not in container and "ports" not in container
    assert pod["spec"]["containers"][0]["readinessProbe"] == {
        "httpGet": {"path": "/", "port": 8888}}, "the admin's own probe stays"


@pytest.mark.parametrize("admin_home, expected", [(None, "/home/jovyan"), ("/srv/me", "/srv/me")])
async def test_every_container_gets_the_home_volume_as_home(admin_home, expected):
    extra = {}
    c = config()
    c.KubeSpawner.volumes = [{"name": "home",
                              "persistentVolumeClaim": {"claimName": "claim-{user_server}"}}]
    c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
    c.KubeSpawner.pvc_name_template = "claim-{user_server}"
    if admin_home:
        c.KubeSpawner.environment = {**c.KubeSpawner.environment, "HOME": admin_home}
    spawner = offline_spawner(c, "alice", "rna", **extra)
    spawner.user_options = OPTIONS
    try:
        pod, *_ = await render_documents(spawner)
    finally:
        await spawner.api.api_client.close()
    for container in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
        assert env_of(container)["HOME"] == expected, container["name"]
