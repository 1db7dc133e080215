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
    home_claim: str | None = None,
) -> dict[str, Any]:
    """Return a copy of KubeSpawner's pod with the studio's pieces applied.

    `home_claim` is the home volume's claim name: its mount path becomes HOME unless the
    admin's environment sets HOME.
    """
    pod = json.loads(json.dumps(pod))
    spec = pod["spec"]
    main = spec["containers"][0]
    user_env = [{"name": k, "value": literal_env_value(v)} for k, v in options.env.items()]
    main["env"] = merge_env(main.get("env") or [], startup_env(startup))
    home = _home_dir(pod, main, home_claim)
    if home:
        main["env"] = merge_env(main["env"], [{"name": "HOME", "value": home}])

    data_vols, data_mounts = pod_volumes(data)
    files_mount = {"name": "studio-files", "mountPath": FILES_MOUNT, "readOnly": True}
    spec["volumes"] = (spec.get("volumes") or []) + [
        {"name": "studio-files", "secret": {"secretName": files_secret, "defaultMode": 0o444}},
        *data_vols,
    ]
    main["volumeMounts"] = (main.get("volumeMounts") or []) + [files_mount, *data_mounts]
    # The wrapper goes in args: the image's ENTRYPOINT (e.g. tini -g -- start.sh) still runs.
    main["args"] = ["/bin/sh", LAUNCHER, "run", "--", *(main.get("args") or [])]
    main["terminationMessagePolicy"] = "FallbackToLogsOnError"

    # The user's variables go to the server and their conda build only (twice, not four times).
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
) -> dict[str, Any]:
    """The Secret carrying the studio's files: options, environment.yml, init script, program.

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
