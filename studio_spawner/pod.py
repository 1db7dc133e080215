"""Pure builders: turn StudioOptions into pod pieces, with no I/O.

They work on JSON-shaped dicts (camelCase, as the API server stores them) after KubeSpawner has
expanded its own templates, so user text never meets ``str.format``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .data import DataVolume, pod_volumes
from .options import StudioOptions

FILES_MOUNT = "/etc/studio"
LAUNCHER = f"{FILES_MOUNT}/studio_startup.sh"
STARTUP_STEPS = ("sync-envs", "user-env", "kernels")
LABEL_PREFIX = "studio.jupyter.org"
CONNECT_CONTAINER = "studio-connect"
CONNECT_HEALTH_PATH = "/_connect/health"
TOOL_PORT_VAR = "CONNECT_TOOL_PORT"
NOBODY = 65534
SERVER_PORT_NAME = "notebook-port"  # KubeSpawner's name for the server's port


@dataclass(frozen=True)
class ToolPod:
    """How a web tool runs behind the studio-connect proxy (see docs/tools.md).

    `command` None keeps the image's ENTRYPOINT and CMD; `server_port` is where the hub
    expects the server (the proxy listens there), `tool_port` where the tool must listen.
    """

    connect_image: str
    server_port: int
    tool_port: int
    command: tuple[str, ...] | None = None
    base_path: str = "strip"
    wait_seconds: int = 300
    activity_seconds: int = 300
    auth_cache_seconds: int = 300


#: Main-container keys an init container (a start-up step) does not take over.
_MAIN_ONLY = frozenset({
    "name", "command", "args", "ports", "livenessProbe", "readinessProbe", "startupProbe",
    "lifecycle", "stdin", "stdinOnce", "tty", "restartPolicy", "resizePolicy",
})


@dataclass(frozen=True)
class StartupSettings:
    """How the in-pod start-up program runs (set by the admin)."""

    image_env_dirs: tuple[str, ...] = ("/opt/conda/envs",)
    installer: str = ""
    init_timeout_seconds: int = 600
    user_env_name: str = "studio"
    conda_env: tuple[tuple[str, str], ...] = ()  # CONDA_CHANNEL_ALIAS, CONDA_PKGS_DIRS
    package_cache: tuple[dict[str, Any], dict[str, Any]] | None = None  # (volume, mount)


def startup_env(settings: StartupSettings) -> list[dict[str, str]]:
    """The STUDIO_* variables the start-up program reads."""
    env = {
        "STUDIO_FILES": FILES_MOUNT,
        "STUDIO_IMAGE_ENV_DIRS": ":".join(settings.image_env_dirs),
        "STUDIO_INIT_TIMEOUT": str(settings.init_timeout_seconds),
        "STUDIO_USER_ENV": settings.user_env_name,
    }
    if settings.installer:
        env["STUDIO_INSTALLER"] = settings.installer
    env.update(settings.conda_env)
    return [{"name": k, "value": v} for k, v in env.items()]


def merge_env(base: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Env entries of `extra` replace same-named entries of `base`; order is kept."""
    names = {e["name"] for e in extra}
    return [e for e in base if e["name"] not in names] + extra


def apply_studio(
    pod: dict[str, Any],
    options: StudioOptions,
    data: Sequence[DataVolume] = (),
    *,
    files_secret: str,
    pull_secret: str | None = None,
    startup: StartupSettings,
    grace_seconds: int,
    tool: ToolPod | None = None,
    home_claim: str | None = None,
) -> dict[str, Any]:
    """Return a copy of KubeSpawner's pod with the studio's pieces applied.

    With `tool`, the main container runs the tool (no start-up steps) and the studio-connect
    sidecar stands where the hub expects the server. `home_claim` is the home volume's claim
    name: its mount path becomes HOME unless the admin's environment sets HOME.
    """
    pod = json.loads(json.dumps(pod))
    spec = pod["spec"]
    main = spec["containers"][0]
    user_env = [{"name": k, "value": literal_env_value(v)} for k, v in options.env.items()]
    own_env = tool_env(tool) if tool else startup_env(startup)
    main["env"] = merge_env(main.get("env") or [], own_env)
    home = _home_dir(pod, main, home_claim)
    if home:
        main["env"] = merge_env(main["env"], [{"name": "HOME", "value": home}])

    data_vols, data_mounts = pod_volumes(data)
    files_mount = {"name": "studio-files", "mountPath": FILES_MOUNT, "readOnly": True}
    cache = [startup.package_cache] if startup.package_cache else []
    cache_vols, cache_mounts = [v for v, _ in cache], [m for _, m in cache]
    spec["volumes"] = (spec.get("volumes") or []) + [
        {"name": "studio-files", "secret": {"secretName": files_secret, "defaultMode": 0o444}},
        *data_vols,
        *cache_vols,
    ]
    main["volumeMounts"] = (main.get("volumeMounts") or []) + [
        files_mount, *data_mounts, *cache_mounts
    ]
    main["terminationMessagePolicy"] = "FallbackToLogsOnError"
    if tool:
        _run_tool(spec, main, tool)
    else:
        # The wrapper goes in args: the image's ENTRYPOINT (e.g. tini -g -- start.sh) still runs.
        main["args"] = ["/bin/sh", LAUNCHER, "run", "--", *(main.get("args") or [])]
        _ready_once_listening(main)
        # The user's variables go to the server and their conda build only.
        spec["initContainers"] = (spec.get("initContainers") or []) + [
            _step_container(main, step, user_env if step == "user-env" else [])
            for step in STARTUP_STEPS
            if step != "user-env" or options.environment_yml.strip()
        ]
    main["env"] = merge_env(main["env"], user_env)
    spec["terminationGracePeriodSeconds"] = grace_seconds
    if pull_secret:
        pulls = spec.get("imagePullSecrets") or []
        spec["imagePullSecrets"] = [*pulls, {"name": pull_secret}]

    metadata = pod["metadata"]
    labels = metadata.get("labels") or {}
    metadata["labels"] = {**labels, **options.labels, **studio_labels(options)}
    return pod


def _ready_once_listening(main: dict[str, Any]) -> None:
    """Ready once the server listens (after the init script): the start waits for it, so a
    failing init script fails the start itself, with its output (not the hub's wait for a
    server that is gone). An admin's own readiness probe stays."""
    if main.get("readinessProbe") or not any(
            p.get("name") == SERVER_PORT_NAME for p in main.get("ports") or []):
        return
    main["readinessProbe"] = {"tcpSocket": {"port": SERVER_PORT_NAME}, "periodSeconds": 1,
                              "timeoutSeconds": 2, "failureThreshold": 3}


def tool_env(tool: ToolPod) -> list[dict[str, str]]:
    """What the tool container learns: the port it must listen on."""
    return [{"name": TOOL_PORT_VAR, "value": str(tool.tool_port)}]


def _run_tool(spec: dict[str, Any], main: dict[str, Any], tool: ToolPod) -> None:
    """Run the tool in the main container and put studio-connect in front of it."""
    main.pop("args", None)  # KubeSpawner's jupyterhub-singleuser arguments
    if tool.command:
        main["command"] = list(tool.command)
    else:
        main.pop("command", None)  # the image's own ENTRYPOINT and CMD
    ports = main.get("ports") or [{"name": SERVER_PORT_NAME, "containerPort": tool.server_port}]
    # The server port moves to studio-connect; every container needs a ports list, since
    # KubeSpawner reads each one's while looking for 'notebook-port'.
    main["ports"] = [{"name": "tool-port", "containerPort": tool.tool_port}]
    spec["containers"] = [main, connect_container(main, tool, ports), *spec["containers"][1:]]
    # A process that is PID 1 of its namespace ignores SIGTERM unless it installs a handler,
    # and most tools (`python3 -m http.server`, Streamlit, …) do not: in a pod of its own the
    # tool would always wait out the grace period and be killed. With the pod's PID namespace
    # shared, the sandbox is PID 1 and SIGTERM stops the tool as the contract promises.
    spec["shareProcessNamespace"] = True


def connect_container(
    main: dict[str, Any], tool: ToolPod, ports: list[dict[str, Any]]
) -> dict[str, Any]:
    """The studio-connect sidecar: the hub's JUPYTERHUB_* variables, the tool's settings, a
    readiness probe that passes once the tool listens, and no privileges."""
    hub_env = [e for e in main.get("env") or [] if e["name"].startswith("JUPYTERHUB_")]
    settings = {
        TOOL_PORT_VAR: str(tool.tool_port),
        "CONNECT_BASE_PATH": tool.base_path,
        "CONNECT_TOOL_WAIT_SECONDS": str(tool.wait_seconds),
        "JUPYTERHUB_ACTIVITY_INTERVAL": str(tool.activity_seconds),
        "CONNECT_AUTH_CACHE_SECONDS": str(tool.auth_cache_seconds),
    }
    uid = (main.get("securityContext") or {}).get("runAsUser")
    return {
        "name": CONNECT_CONTAINER,
        "image": tool.connect_image,
        "imagePullPolicy": "IfNotPresent",
        "env": merge_env(hub_env, [{"name": k, "value": v} for k, v in settings.items()]),
        "ports": ports,
        "readinessProbe": {
            "httpGet": {"path": CONNECT_HEALTH_PATH, "port": tool.server_port},
            "periodSeconds": 1,  # ready within a second of the tool listening
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"memory": "128Mi"}},
        "securityContext": {
            "runAsUser": uid if isinstance(uid, int) and uid > 0 else NOBODY,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def literal_env_value(value: str) -> str:
    """Escape `$` so Kubernetes passes the value as typed (it expands `$(VAR)`, `$$` is `$`)."""
    return value.replace("$", "$$")


def _home_dir(pod: dict[str, Any], main: dict[str, Any], home_claim: str | None) -> str | None:
    """HOME for every container: the admin's, else the home volume's mount path, else None
    (the image's). The start-up steps and the server then use the same home."""
    for entry in main.get("env") or []:
        if entry.get("name") == "HOME" and entry.get("value"):
            return None  # the admin's environment sets it for every container already
    if not home_claim:
        return None
    volumes = {
        v["name"] for v in pod["spec"].get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("claimName") == home_claim
    }
    for mount in main.get("volumeMounts") or []:
        if mount.get("name") in volumes and not mount.get("subPath"):
            return mount["mountPath"]
    return None


def studio_labels(options: StudioOptions) -> dict[str, str]:
    """Labels that let admins select studios by template and sharing mode."""
    return {
        f"{LABEL_PREFIX}/template": options.template or "custom",
        f"{LABEL_PREFIX}/private": str(options.private).lower(),
    }


def _step_container(
    main: dict[str, Any], step: str, user_env: list[dict[str, Any]]
) -> dict[str, Any]:
    """An init container running one start-up step in the studio's image, with the main
    container's settings (envFrom, securityContext, resources, …) and `user_env`."""
    container = {key: value for key, value in main.items() if key not in _MAIN_ONLY}
    container.update(name=f"studio-{step}", command=["/bin/sh", LAUNCHER, step],
                     env=merge_env(main.get("env") or [], user_env))
    return container


def files_secret(
    name: str,
    options: StudioOptions,
    program: Mapping[str, str],
    *,
    labels: Mapping[str, str],
    owner: Mapping[str, Any] | None = None,
    conda: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Secret carrying the studio's files: options, environment.yml, init script, program.

    `conda` replaces environment.yml with its normalised form and adds the hub's lock.
    options.json leaves out the environment.yml and the init script (they are files of their
    own) and env values (they are in the container's environment), so nothing large is in the
    Secret twice and the Secret stays within Kubernetes' 1 MiB.
    """
    stored = options.to_user_options()
    for key in ("environment_yml", "init_script"):
        stored.pop(key)
    stored["env"] = sorted(options.env)  # names only: the values are in the environment
    files = {
        "options.json": json.dumps(stored, indent=2, sort_keys=True, ensure_ascii=False),
        "environment.yml": options.environment_yml,
        "init.sh": options.init_script,
        **(conda or {}),
        **program,
    }
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in files.items()},
    }
