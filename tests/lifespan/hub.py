"""A real JupyterHub (with configurable-http-proxy) in a subprocess, and helpers to drive it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SERVICE = "lifespan"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


def hub_config(*, ports: dict[str, int], db: Path, admin_token: str, service_token: str,
               spawner: str, extra: str = "", managed_args: list[str] | None = None) -> str:
    """The jupyterhub_config.py of a test hub; the lifespan service is external unless
    ``managed_args`` is given (then the hub runs it with those arguments)."""
    managed = managed_args is not None
    env = {"PYTHONPATH": str(REPO)}
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from studio_spawner.lifespan import lifespan_role, lifespan_service, user_access_role
        c = get_config()  # noqa
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {ports["public"]}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {ports["hub"]}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports["proxy_api"]}"
        c.ConfigurableHTTPProxy.auth_token = "proxy-{secrets.token_hex(8)}"
        c.JupyterHub.db_url = "sqlite:///{db}"
        c.JupyterHub.cookie_secret = bytes.fromhex("{secrets.token_hex(32)}")
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{"boss"}}
        c.JupyterHub.allow_named_servers = True
        c.JupyterHub.named_server_limit_per_user = 0
        c.JupyterHub.concurrent_spawn_limit = 0
        c.JupyterHub.active_server_limit = 0
        c.JupyterHub.last_activity_interval = 3600
        c.JupyterHub.cleanup_servers = True
        c.Spawner.start_timeout = 60
        c.Spawner.http_timeout = 60
        c.JupyterHub.services = [
            lifespan_service(name="{SERVICE}", port={ports["service"]}, managed={managed},
                             args={managed_args!r}, environment={env!r},
                             data_dir={str(db.parent / "lifespan-data")!r}),
            {{"name": "tester", "api_token": "{admin_token}"}},
        ]
        c.JupyterHub.services[0]["api_token"] = "{service_token}"
        c.JupyterHub.load_roles = [
            lifespan_role("{SERVICE}"),
            user_access_role("{SERVICE}"),
            {{"name": "tester", "services": ["tester"],
              "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens",
                         "access:services"]}},
        ]
    """) + spawner + "\n" + extra + "\n"


SIMPLE_SPAWNER = f"""
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{sys.executable!r}, {str(HERE / "tiny_server.py")!r}]
c.Spawner.args = []
c.Spawner.default_url = "/"
"""


class Hub:
    """A running hub; ``api()`` talks to it as the admin test service."""

    def __init__(self, workdir: Path, spawner: str = SIMPLE_SPAWNER, extra: str = "",
                 managed_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.ports = {k: free_port() for k in ("public", "hub", "proxy_api", "service")}
        self.admin_token = secrets.token_hex(16)
        self.service_token = secrets.token_hex(16)
        self.config = workdir / "jupyterhub_config.py"
        self.config.write_text(hub_config(
            ports=self.ports, db=workdir / "hub.sqlite", admin_token=self.admin_token,
            service_token=self.service_token, spawner=spawner, extra=extra,
            managed_args=managed_args))
        self.proc: subprocess.Popen | None = None
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
        self.http.headers["Authorization"] = f"token {self.admin_token}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['public']}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['hub']}/hub/api"

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['service']}"

    def start(self) -> Hub:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        self.log = open(self.workdir / "hub.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config)], cwd=self.workdir,
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._up, timeout=90, what="the hub to start")
        return self

    def _up(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"hub exited; see {self.workdir / 'hub.log'}")
        try:
            return requests.get(self.public_url + "/hub/api/", timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()

    # -- the Hub API as admin ----------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (),
            token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        resp = self.http.request(method, self.api_url + path, headers=headers,
                                 data=None if body is None else json.dumps(body), timeout=60)
        if not (resp.ok or resp.status_code in ok):
            raise AssertionError(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp

    def add_user(self, name: str, groups: list[str] = ()) -> None:
        self.api("POST", f"/users/{name}", ok=(409,))
        for group in groups:
            self.api("POST", f"/groups/{group}", ok=(409,))
            self.api("POST", f"/groups/{group}/users", {"users": [name]})

    def spawn(self, user: str, server: str = "", options: dict | None = None) -> None:
        """Start a server with ``options`` as its user_options (no wait)."""
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        self.api("POST", path, options or {})

    def server(self, user: str, server: str = "") -> dict | None:
        model = self.api("GET", f"/users/{user}").json()
        return (model.get("servers") or {}).get(server)

    def is_ready(self, user: str, server: str = "") -> bool:
        s = self.server(user, server)
        return bool(s and s["ready"])

    def is_gone(self, user: str, server: str = "") -> bool:
        return self.server(user, server) is None

    def wait_ready(self, user: str, server: str = "", timeout: float = 60) -> dict:
        wait_for(lambda: self.is_ready(user, server), timeout, what=f"{user}/{server} ready")
        return self.server(user, server)

    def stop_server(self, user: str, server: str = "") -> None:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        self.api("DELETE", path, ok=(400, 404))

    def user_token(self, user: str, scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        return self.api("POST", f"/users/{user}/tokens", body).json()["token"]


class Lifespan:
    """The lifespan service in a subprocess, configured through a config file."""

    def __init__(self, hub: Hub, data_dir: Path, api_url: str | None = None, **config: Any):
        self.hub = hub
        self.data_dir = data_dir
        self.api_url = api_url or hub.api_url
        self.config = {"interval": 0.5, "hour_seconds": 4, "api_backoff": 0.2,
                       "api_timeout": 5, **config}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Lifespan:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "lifespan_config.py"
        lines = ["c = get_config()  # noqa"]
        lines += [f"c.LifespanService.{k} = {v!r}" for k, v in self.config.items()]
        cfg.write_text("\n".join(lines) + "\n")
        prefix = f"/services/{SERVICE}/"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "JUPYTERHUB_API_URL": self.api_url,
            "JUPYTERHUB_API_TOKEN": self.hub.service_token,
            "JUPYTERHUB_SERVICE_NAME": SERVICE,
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_SERVICE_URL": self.hub.service_url,
            "JUPYTERHUB_CLIENT_ID": f"service-{SERVICE}",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
            "JUPYTERHUB_HOST": "",
            "JUPYTERHUB_BASE_URL": "/",
        }
        self.log = open(self.data_dir / "lifespan.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "studio_spawner.lifespan", f"--config={cfg}",
             f"--data-dir={self.data_dir}", "--log-level=DEBUG"],
            cwd=self.data_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=30, what="the lifespan service")
        return self

    def _up(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"service exited; see {self.data_dir / 'lifespan.log'}")
        try:
            return requests.get(self.metrics_url, timeout=2).ok
        except requests.RequestException:
            return False

    @property
    def metrics_url(self) -> str:
        return self.hub.service_url + f"/services/{SERVICE}/metrics"

    def logs(self) -> str:
        return (self.data_dir / "lifespan.log").read_text()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
