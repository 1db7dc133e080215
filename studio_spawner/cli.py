"""`studio-spawner`: the admin's tools to check options and see the pod a studio would get.

    studio-spawner validate --config jupyterhub_config.py options.json
    studio-spawner render   --config jupyterhub_config.py options.json [--user U] [--server S]

Both run offline: nothing contacts a cluster or a hub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from traitlets.config import Config, PyFileConfigLoader

from .errors import OptionsError

PLACEHOLDER_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""


def load_config(path: str | None) -> Config:
    """Load a jupyterhub_config.py-style file (no file: the defaults)."""
    if not path:
        return Config()
    file = Path(path).resolve()
    if not file.is_file():
        raise SystemExit(f"studio-spawner: no config file at {path}")
    return PyFileConfigLoader(file.name, path=str(file.parent)).load_config()


def _ensure_kubeconfig() -> None:
    """KubeSpawner loads a kubeconfig when created; offline we give it one that is never used."""
    from kubernetes_asyncio.config import kube_config

    if Path(kube_config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser().exists():
        return
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as handle:
        handle.write(PLACEHOLDER_KUBECONFIG)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = handle.name  # read when KubeSpawner loads it


def offline_spawner(
    config: Config, user: str = "user", server: str = "", groups: Sequence[str] = ()
) -> Any:
    """A StudioSpawner for a user (in `groups`) and server that never talks to a cluster or a
    hub."""
    _ensure_kubeconfig()
    from .spawner import StudioSpawner

    fake_user = SimpleNamespace(
        name=user, id=1, url=f"/user/{user}/", escaped_name=user, settings={},
        groups=[SimpleNamespace(name=group) for group in groups],
    )
    hub = SimpleNamespace(
        public_host="", url="http://hub:8081/hub/", base_url="/hub/",
        api_url="http://hub:8081/hub/api",
    )
    orm_spawner = SimpleNamespace(name=server, server=None, user_options=None, state=None)
    spawner = StudioSpawner(
        _mock=True, config=config, user=fake_user, hub=hub, orm_spawner=orm_spawner
    )
    spawner.api_token = "<the hub sets this token at spawn>"
    return spawner


def read_options(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"studio-spawner: cannot read options from {path}: {error}") from None


def _groups(text: str) -> list[str]:
    return [group.strip() for group in text.split(",") if group.strip()]


async def _validate(args: argparse.Namespace) -> int:
    spawner = offline_spawner(load_config(args.config), args.user, args.server,
                              _groups(args.groups))
    try:
        options = spawner.parse(read_options(args.options))
    except OptionsError as error:
        for problem in error.errors:
            print(f"{problem.field}: {problem.message}")
        return 1
    finally:
        await spawner.api.api_client.close()
    print(json.dumps(options.to_user_options(), indent=2, sort_keys=True))
    return 0


async def render_documents(spawner: Any) -> list[dict[str, Any]]:
    """The pod, files Secret, (when the spawner makes them) home PVC and data PVs and claims.

    Offline: nothing is checked against AWS, and an ECR pull Secret is only named in the pod.
    """
    spawner.apply_studio_options(spawner.parse(spawner.raw_options()))
    client = spawner.api.api_client
    pod = client.sanitize_for_serialization(await spawner.get_pod_manifest())
    owner = {"apiVersion": "v1", "kind": "Pod", "name": spawner.pod_name, "uid": "<pod uid>"}
    documents = [pod, spawner.files_secret_manifest(owner)]
    if spawner.storage_pvc_ensure:
        documents.append(client.sanitize_for_serialization(spawner.get_pvc_manifest()))
    documents += [manifest for data in spawner.data_volumes() for manifest in data.manifests]
    return documents


async def _render(args: argparse.Namespace) -> int:
    spawner = offline_spawner(load_config(args.config), args.user, args.server,
                              _groups(args.groups))
    spawner.user_options = read_options(args.options)
    try:
        documents = await render_documents(spawner)
    except OptionsError as error:
        for problem in error.errors:
            print(f"{problem.field}: {problem.message}", file=sys.stderr)
        return 1
    finally:
        await spawner.api.api_client.close()
    print(yaml.safe_dump_all(documents, sort_keys=False), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="studio-spawner", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("validate", _validate, "print the normalised options, or every field error"),
        ("render", _render, "print the pod, Secret and PVC the spawner would create"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("options", help="a JSON file of user options")
        command.add_argument("--config", help="a jupyterhub_config.py-style file")
        command.add_argument("--user", default="user", help="the user's name (default: user)")
        command.add_argument("--server", default="", help="the named server ('' = default)")
        command.add_argument(
            "--groups", default="", help="the user's hub groups, comma-separated; with "
            "workspace_sharing they say where the user may launch (workspace:<ws>:launch)")
        command.set_defaults(func=func)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return asyncio.run(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
