"""Tool studios without a cluster: catalogue entries, options, form, pod and failure reasons."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from studio_spawner.catalog import StudioCatalog, tool_command
from studio_spawner.cli import offline_spawner
from studio_spawner.errors import OptionsError
from studio_spawner.form import form_values, render_form
from studio_spawner.options import form_to_raw, parse_options
from studio_spawner.pod_status import describe_event, pod_failure_reason
from studio_spawner.spawner import StudioStartError

from .conftest import CATALOG_CONFIG
from .test_form import parse
from .test_pod import config, env_of, render

CONNECT = "registry.studio.test/studio-connect:1"
WEB = {"id": "web", "display_name": "Web server", "image": "docker.io/library/python:3.12",
       "kind": "tool", "command": "python3 -m http.server ${CONNECT_TOOL_PORT}"}
LAB = {"id": "lab", "display_name": "JupyterLab", "image": "quay.io/jupyter/base-notebook:1",
       "kind": "tool", "base_path": "pass", "port": 9000,
       "command": ["jupyter", "lab", "--port=$(CONNECT_TOOL_PORT)"]}
TEMPLATES = [*CATALOG_CONFIG["templates"], WEB, LAB]


def tool_catalog(**extra) -> StudioCatalog:
    return StudioCatalog(**{**CATALOG_CONFIG, "templates": TEMPLATES, **extra})


@pytest.mark.parametrize(("command", "expected"), [
    ("serve --port $CONNECT_TOOL_PORT", ["serve", "--port", "$(CONNECT_TOOL_PORT)"]),
    ("serve --bind=127.0.0.1:${CONNECT_TOOL_PORT}",
     ["serve", "--bind=127.0.0.1:$(CONNECT_TOOL_PORT)"]),
    ("serve 'two words' $CONNECT_TOOL_PORTS $HOME", ["serve", "two words", "$CONNECT_TOOL_PORTS",
                                                     "$HOME"]),
    (["a", "$(CONNECT_TOOL_PORT)"], ["a", "$(CONNECT_TOOL_PORT)"]),
    (None, None),
])
def test_catalogue_commands_become_kubernetes_commands(command, expected):
    assert tool_command(command) == expected


@pytest.mark.parametrize(("entry", "message"), [
    ({"kind": "web"}, "templates[0].kind: 'web' is not a kind"),
    ({"command": "serve"}, "templates[0].command: only tool templates"),
    ({"port": 9000}, "templates[0].port: only tool templates"),
    ({"kind": "tool", "command": "serve 'open"}, "templates[0].command: No closing quotation"),
    ({"kind": "tool", "command": ["serve", ""]}, "templates[0].command: give one or more"),
    ({"kind": "tool", "command": ["serve", 1]}, "templates[0].command:"),
    ({"kind": "tool", "port": 70000}, "templates[0].port: 70000 is not a port"),
    ({"kind": "tool", "port": True}, "templates[0].port:"),
    ({"kind": "tool", "base_path": "keep"}, "templates[0].base_path: 'keep' is not allowed"),
])
def test_bad_tool_templates_name_the_field(entry, message):
    with pytest.raises(TraitError, match=message.replace("[", r"\[").replace("]", r"\]")):
        StudioCatalog(templates=[{"id": "t", "display_name": "T", "image": "python:3", **entry}])


def test_template_kind_is_read_again_and_not_stored():
    options = parse_options({"name": "s", "template": "web"}, tool_catalog())
    assert options.is_tool
    stored = options.to_user_options()
    assert stored["kind"] is None and stored["image"] is None
    assert parse_options(stored, tool_catalog()) == options
    with pytest.raises(OptionsError) as error:
        parse_options({"name": "s", "template": "web", "kind": "jupyter"}, tool_catalog())
    assert "the template 'web' is a tool studio" in error.value.by_field["kind"]


def test_custom_tools_only_when_allowed():
    raw = {"name": "s", "image": "docker.io/library/nginx:1", "kind": "tool"}
    with pytest.raises(OptionsError) as error:
        parse_options(raw, tool_catalog())
    assert "cannot run as web tools here" in error.value.by_field["kind"]
    options = parse_options(raw, tool_catalog(allow_custom_tools=True))
    assert options.is_tool and options.to_user_options()["kind"] == "tool"
    assert parse_options({**raw, "kind": None}, tool_catalog()).kind == "jupyter"
    with pytest.raises(OptionsError) as error:
        parse_options({**raw, "kind": "vnc"}, tool_catalog(allow_custom_tools=True))
    assert "choose one of: jupyter, tool" in error.value.by_field["kind"]


def test_tools_refuse_conda_packages_and_init_scripts():
    with pytest.raises(OptionsError) as error:
        parse_options({"name": "s", "template": "web", "environment_yml": "dependencies: [x]",
                       "init_script": "echo hi"}, tool_catalog())
    assert "Conda packages are for Jupyter studios" in error.value.by_field["environment_yml"]
    assert "clear the init script" in error.value.by_field["init_script"]


def test_form_offers_the_kind_for_custom_images_only_when_allowed():
    catalog = tool_catalog()
    form = parse(render_form(catalog, form_values(catalog, None)))
    assert not form.named("kind")
    web = next(a for a in form.named("template") if a["value"] == "web")
    assert web["data-kind"] == "tool" and web["data-conda"] == "false"
    catalog = tool_catalog(allow_custom_tools=True)
    saved = {"name": "s", "template": None, "image": "docker.io/library/nginx:1", "kind": "tool"}
    form = parse(render_form(catalog, form_values(catalog, saved)))
    kinds = {a["value"]: "checked" in a for a in form.named("kind")}
    assert kinds == {"jupyter": False, "tool": True}
    raw, _ = form_to_raw({"environment_source": ["custom"], "image": ["x"], "kind": ["tool"]})
    assert raw["kind"] == "tool"
    raw, _ = form_to_raw({"environment_source": ["template"], "template": ["web"],
                          "kind": ["tool"]})
    assert raw["kind"] is None, "a template decides its own kind"


async def tool_pod(options: dict, **extra) -> dict:
    extra = {"templates": TEMPLATES, "connect_image": CONNECT, "allow_custom_tools": True,
             **extra}
    return (await render({"name": "s", "data": [{"name": "genomes"}], "labels": {"t": "x"},
                          **options}, server="rna", **extra))["pod"]


async def test_a_tool_pod_runs_the_tool_beside_studio_connect():
    pod = await tool_pod({"template": "web"}, uid=1000)
    spec = pod["spec"]
    tool, connect = spec["containers"]
    assert tool["name"] == "notebook", "KubeSpawner's poll() reads the 'notebook' container"
    assert tool["command"] == ["python3", "-m", "http.server", "$(CONNECT_TOOL_PORT)"]
    assert "args" not in tool, "no jupyterhub-singleuser arguments"
    assert env_of(tool)["CONNECT_TOOL_PORT"] == "8080"
    assert "STUDIO_FILES" not in env_of(tool)
    assert tool["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "initContainers" not in spec or not spec["initContainers"], "no Jupyter start-up steps"
    mounts = {m["mountPath"] for m in tool["volumeMounts"]}
    assert "/workspace/data/genomes" in mounts, "data repositories stay mounted"
    assert pod["metadata"]["labels"]["t"] == "x"
    assert pod["metadata"]["labels"]["studio.jupyter.org/template"] == "web"

    assert connect["name"] == "studio-connect" and connect["image"] == CONNECT
    env = env_of(connect)
    assert env["CONNECT_TOOL_PORT"] == "8080" and env["CONNECT_BASE_PATH"] == "strip"
    for name in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_CLIENT_ID", "JUPYTERHUB_API_URL",
                 "JUPYTERHUB_OAUTH_CALLBACK_URL", "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
                 "JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_USER", "JUPYTERHUB_ACTIVITY_URL"):
        assert name in env, name  # (the hub adds JUPYTERHUB_SERVICE_PREFIX at spawn)
    assert connect["ports"] == [{"name": "notebook-port", "containerPort": 8888}]
    assert tool["ports"] == [{"name": "tool-port", "containerPort": 8080}]
    assert connect["readinessProbe"]["httpGet"] == {"path": "/_connect/health", "port": 8888}
    security = connect["securityContext"]
    assert security["runAsUser"] == 1000 and security["runAsNonRoot"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}


async def test_template_port_base_path_and_custom_tools():
    lab = await tool_pod({"template": "lab"})
    tool, connect = lab["spec"]["containers"]
    assert env_of(tool)["CONNECT_TOOL_PORT"] == "9000"
    assert env_of(connect)["CONNECT_BASE_PATH"] == "pass"
    assert connect["securityContext"]["runAsUser"] == 65534
    custom = await tool_pod({"image": "docker.io/library/nginx:1", "kind": "tool"})
    tool = custom["spec"]["containers"][0]
    assert "command" not in tool and "args" not in tool, "the image's ENTRYPOINT and CMD run"


async def test_tool_studios_need_the_connect_image_and_a_port_of_their_own():
    with pytest.raises(StudioStartError, match="template: .*StudioSpawner.connect_image"):
        await tool_pod({"template": "web"}, connect_image="")
    with pytest.raises(StudioStartError, match="template: the tool's port 8888 is the server"):
        await tool_pod({"template": "web"}, connect_tool_port=8888)
    spawner = offline_spawner(config(templates=TEMPLATES, connect_image=CONNECT), "ann", "s")
    spawner.internal_ssl = True  # set by the hub from JupyterHub.internal_ssl
    spawner.apply_studio_options(spawner.parse({"name": "s", "template": "web"}))
    with pytest.raises(StudioStartError, match="template: .*internal_ssl, and studio-connect"):
        spawner.tool_pod()
    await spawner.api.api_client.close()


def tool_status(**statuses) -> dict:
    return {"spec": {"containers": [{"name": "notebook"}, {"name": "studio-connect"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": name, "state": state} for name, state in statuses.items()]}}


def test_failure_reasons_name_the_tool_and_its_last_output():
    exited = {"terminated": {"exitCode": 2, "message": "python3: can't open file 'app.py'"}}
    assert pod_failure_reason(tool_status(notebook=exited)) == (
        "the tool failed with exit code 2: python3: can't open file 'app.py'"
    )
    done = {"terminated": {"exitCode": 0, "message": "nothing to serve"}}
    assert pod_failure_reason(tool_status(notebook=done)) == (
        "the tool exited before the server was ready: nothing to serve"
    )
    never = {"terminated": {"exitCode": 1, "message": "the tool never listened on port 8080"}}
    assert pod_failure_reason(tool_status(**{"studio-connect": never})) == (
        "the studio's proxy (studio-connect) failed with exit code 1: "
        "the tool never listened on port 8080"
    )


def test_progress_says_the_tool_is_awaited():
    event = {"raw_event": {"reason": "Started",
                           "involvedObject": {"fieldPath": "spec.containers{studio-connect}"}}}
    assert describe_event(event, 8080) == "Waiting for the tool to listen on port 8080…"
    assert describe_event(event) is None


async def test_stopping_keeps_the_grace_period():
    from traitlets.config import Config

    from studio_spawner.cli import offline_spawner

    config = Config()
    config.StudioSpawner.termination_grace_period_seconds = 45
    spawners = [offline_spawner(config)]
    assert spawners[0].delete_grace_period == 45, "KubeSpawner's 1 s would cut SIGTERM's grace"
    config.KubeSpawner.delete_grace_period = 3
    spawners.append(offline_spawner(config))
    assert spawners[1].delete_grace_period == 3, "an explicit setting wins"
    for spawner in spawners:
        await spawner.api.api_client.close()
