"""A real JupyterHub (with configurable-http-proxy) in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from studio_spawner.cli import PLACEHOLDER_KUBECONFIG


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (sockets held open together so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Hub:
    """A running hub: its public URL, admin API token and log file."""

    url: str
    token: str
    log: Path

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers,
                                timeout=30, **kwargs)

    def login(self, user: str, password: str = "studio") -> requests.Session:
        session = requests.Session()
        session.get(f"{self.url}/hub/login", timeout=30)
        response = session.post(
            f"{self.url}/hub/login",
            data={"username": user, "password": password,
                  "_xsrf": session.cookies.get("_xsrf", "")},
            timeout=30,
        )
        response.raise_for_status()
        return session


class _HiddenInputs(HTMLParser):
    """The hidden inputs of the hub's OAuth authorize page (its _xsrf and scopes)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("type") == "hidden":
            self.fields.append((found["name"], found.get("value") or ""))


def open_as_browser(session: requests.Session, url: str) -> requests.Response:
    """GET a server's page through the hub's OAuth flow, confirming the authorize page as a
    person would (the hub asks everyone but the owner); return the last response."""
    page = session.get(url, timeout=30)
    if page.status_code == 200 and "/hub/api/oauth2/authorize" in page.url:
        form = _HiddenInputs()
        form.feed(page.text)
        page = session.post(page.url, data=form.fields, timeout=30)
    return page


def start_hub(
    directory: Path, extra_config: str, env: dict[str, str] | None = None
) -> Iterator[Hub]:
    """Run `jupyterhub` with the example catalogue plus `extra_config`; stop it afterwards."""
    port, hub_port, api_port = free_ports(3)
    token = "studio-test-admin-token"
    config = directory / "jupyterhub_config.py"
    config.write_text(
        f"""
c = get_config()
c.JupyterHub.spawner_class = "studio"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.JupyterHub.db_url = "sqlite:///{directory}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{directory}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "studio"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.services = [{{"name": "tests", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "tests", "scopes": ["admin:users", "admin:servers",
    "access:servers"], "services": ["tests"]}}]
c.StudioSpawner.templates = [
    {{"id": "python", "display_name": "Python", "image": "quay.io/jupyter/scipy-notebook:1"}},
]
{extra_config}
"""
    )
    kubeconfig = directory / "kubeconfig"
    if not kubeconfig.exists():
        kubeconfig.write_text(PLACEHOLDER_KUBECONFIG)
    log = directory / "hub.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(config)],
        cwd=directory,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})},
    )
    hub = Hub(f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the hub exited:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{hub.url}/hub/api", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the hub did not start in 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield hub
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        subprocess.run(["pkill", "-f", f"configurable-http-proxy.*{api_port}"], check=False)
