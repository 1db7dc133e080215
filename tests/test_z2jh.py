"""Zero to JupyterHub: our values validate against the chart's schema, and the Python they
inject really configures StudioSpawner and the lifespan service."""

from __future__ import annotations

import copy
import shlex
import subprocess
import venv
from pathlib import Path

import jsonschema
import pytest
import yaml
from traitlets.config import Config

from studio_spawner.auth import WorkspaceAuthenticator
from studio_spawner.cli import offline_spawner
from studio_spawner.home.handlers import StudiosHandler
from studio_spawner.lifespan.app import LifespanService

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT.parent / "shared" / "z2jh"
VALUES = sorted((ROOT / "helm-values").glob("values*.yaml"))
# Files used on top of another one (helm -f values.yaml -f values-aws.yaml).
OVERLAYS = {"values-aws.yaml": "values.yaml"}


def merged(path: Path) -> dict:
    """Our values (over their base file, if any) over the chart's defaults, as Helm merges."""

    def merge(base: dict, over: dict) -> dict:
        out = copy.deepcopy(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if path.name in OVERLAYS:
        values = merge(values, yaml.safe_load((path.parent / OVERLAYS[path.name]).read_text()))
    return merge(values, yaml.safe_load(path.read_text()))


def hub_config(values: dict) -> Config:
    """Apply hub.services, hub.loadRoles, hub.config, then every hub.extraConfig snippet, in
    the chart's order."""
    c = Config()
    c.JupyterHub.services = [{"name": name, **service}
                             for name, service in (values["hub"].get("services") or {}).items()]
    c.JupyterHub.load_roles = [{"name": name, **role}
                               for name, role in (values["hub"].get("loadRoles") or {}).items()]
    for section, settings in (values["hub"].get("config") or {}).items():
        for key, value in settings.items():
            setattr(getattr(c, section), key, value)
    for name in sorted(values["hub"].get("extraConfig") or {}):
        exec(compile(values["hub"]["extraConfig"][name], f"extraConfig.{name}", "exec"), {"c": c})
    return c


@pytest.mark.parametrize("path", VALUES, ids=lambda p: p.name)
def test_values_validate_against_the_chart_schema(path):
    assert CHART.is_dir(), f"the chart's schema is expected at {CHART}"
    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(merged(path))


@pytest.mark.parametrize("path", VALUES, ids=lambda p: p.name)
async def test_injected_config_configures_a_real_spawner(path):
    values = merged(path)
    config = hub_config(values)
    assert config.JupyterHub.spawner_class == "studio"
    groups = []
    login = config.JupyterHub.authenticator_class
    if isinstance(login, type) and issubclass(login, WorkspaceAuthenticator):  # member's groups
        authenticator = login(config=config)
        groups = authenticator.add_workspaces({"name": "ann"}, ["genomics:members"], [],
                                              False)["groups"]
        assert "workspace:genomics:launch" in groups
    spawner = offline_spawner(config, "ann", "s", groups=groups)
    try:
        spawner.apply_studio_options(spawner.parse({"name": "check"}))
        assert spawner.image == config.StudioSpawner.templates[0]["image"]
        repositories = [r["name"] for r in config.StudioSpawner.get("data_repositories", [])]
        if repositories:  # every repository mounts; read-only first
            spawner.apply_studio_options(spawner.parse(
                {"name": "check", "data": [{"name": n} for n in repositories]}))
            assert all(not v.writable for v in spawner.data_volumes())
    finally:
        await spawner.api.api_client.close()


async def test_tool_templates_run_behind_the_connect_image():
    from studio_spawner.cli import render_documents

    config = hub_config(merged(ROOT / "helm-values" / "values.yaml"))
    tools = [t["id"] for t in config.StudioSpawner.templates if t.get("kind") == "tool"]
    assert tools, "the values show a web tool template"
    spawner = offline_spawner(config, "ann", "s", groups=["workspace:genomics:launch"])
    spawner.user_options = {"name": "code", "template": tools[0], "workspace": "genomics"}
    try:
        pod, *_ = await render_documents(spawner)
    finally:
        await spawner.api.api_client.close()
    tool, connect = pod["spec"]["containers"]
    assert connect["image"] == config.StudioSpawner.connect_image
    assert "$(CONNECT_TOOL_PORT)" in " ".join(tool["command"])


def test_workspace_login_and_sharing_are_wired():
    from oauthenticator.generic import GenericOAuthenticator

    from studio_spawner.sharing import SCOPES, SERVICE_NAME

    config = hub_config(merged(ROOT / "helm-values" / "values.yaml"))
    authenticator_class = config.JupyterHub.authenticator_class
    assert issubclass(authenticator_class, WorkspaceAuthenticator)
    assert issubclass(authenticator_class, GenericOAuthenticator)
    authenticator = authenticator_class(config=config)
    assert authenticator.auth_state_groups_key == "oauth_user.groups"
    model = authenticator.add_workspaces({"name": "lead-scientist"}, ["genomics:readers"], [],
                                         False)
    assert "workspace:genomics:owner" in model["groups"], "configured members add to claims"
    assert {"name": "workspace-genomics-managers"}.items() <= model["roles"][-1].items()
    sharing = next(s for s in config.JupyterHub.services if s["name"] == SERVICE_NAME)
    role = next(r for r in config.JupyterHub.load_roles if r.get("services") == [SERVICE_NAME])
    assert role["scopes"] == SCOPES
    assert sharing["api_token"] == config.StudioSpawner.sharing_api_token
    assert config.StudioSpawner.workspace_sharing is True


def test_lifespan_service_command_and_role(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the-hub-sets-this")
    values = merged(ROOT / "helm-values" / "values.yaml")
    service = values["hub"]["services"]["lifespan"]
    assert service["command"][:3] == ["python3", "-m", "studio_spawner.lifespan"]
    app = LifespanService()
    app.initialize(service["command"][3:])
    assert app.bind_url == "http://0.0.0.0:10101" and app.interval == 60
    assert app.policy_from_hub, "one lifespan policy: the service reads the hub's"
    config = hub_config(values)
    assert config.StudioHome.lifespan_extensions_file == f"{app.data_dir}/extensions.json"
    assert ("/studios/?", StudiosHandler) in config.JupyterHub.extra_handlers.get_value([])
    from studio_spawner.lifespan import SCOPES

    role = values["hub"]["loadRoles"]["lifespan-service"]
    assert role["scopes"] == SCOPES and role["services"] == ["lifespan"]
    assert "access:services!service=lifespan" in values["hub"]["loadRoles"]["user"]["scopes"]


def test_hub_image_recipe_keeps_the_pins(tmp_path):
    """Simulate images/hub/Dockerfile: the hub's pins, then studio-spawner constrained by them."""
    pins = [line.split("#")[0].strip() for line in (CHART / "hub-requirements.txt").read_text()
            .splitlines()]
    # Every pin of the image, but the two that build C code against system libraries here.
    native = ("psycopg2==", "pycurl==")
    base = [p for p in pins if "==" in p and not p.startswith(native)]
    env = tmp_path / "hub"
    venv.create(env, with_pip=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *base], check=True, timeout=600)
    freeze = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "freeze"], check=True,
                            capture_output=True, text=True).stdout
    (tmp_path / "hub-pins.txt").write_text(freeze)
    subprocess.run([*pip, "--constraint", str(tmp_path / "hub-pins.txt"), str(ROOT)], check=True,
                   timeout=600)
    after = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "freeze"], check=True,
                           capture_output=True, text=True).stdout
    before_pins = {line for line in freeze.splitlines() if "==" in line}
    assert before_pins <= set(after.splitlines()), "installing studio-spawner changed a pin"
    help_all = subprocess.run(shlex.split(f"{env}/bin/jupyterhub --help-all"), check=True,
                              capture_output=True, text=True, timeout=120).stdout
    assert "--StudioSpawner.templates" in help_all
    assert "--StudioSpawner.lifespan_max_hours" in help_all
