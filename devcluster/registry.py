"""OCI registries on loopback (Debian's ``docker-registry``, the CNCF distribution registry).

Two registries, each on its own loopback address and port 443 with a certificate from the
cluster CA: ``registry.studio.test`` serves everyone; ``private.studio.test`` (which also
answers for the Amazon ECR host names in ``ECR_HOSTS``) requires basic auth, so a pod without
the right ``imagePullSecrets`` gets a real ``ErrImagePull``. The node's ``/etc/hosts`` names them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml

from .controlplane import DevClusterError
from .pki import CertificateAuthority, name
from .processes import Processes

PUBLIC_HOST = "registry.studio.test"
PRIVATE_HOST = "private.studio.test"
# moto's ECR answers GetAuthorizationToken for account A with user AWS, password "A-auth-token".
ECR_ACCOUNT = "123456789012"
ECR_HOSTS = tuple(f"{ECR_ACCOUNT}.dkr.ecr.{region}.amazonaws.com"
                  for region in ("eu-west-1", "us-east-1"))
PRIVATE_USERS = {"studio": "studio-pull-secret", "AWS": f"{ECR_ACCOUNT}-auth-token"}


@dataclass
class Registry:
    """One running registry: where it listens and who may pull."""

    name: str
    address: str
    hosts: tuple[str, ...]
    users: dict[str, str]
    ca_file: Path

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def credentials(self) -> tuple[str, str] | None:
        return next(iter(self.users.items()), None)

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 120.0,
                ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP call to the registry API (with our credentials when it needs them)."""
        req = urllib.request.Request(self.url + path, data=data, method=method)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        if creds := self.credentials():
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


class Registries:
    """Starts the public and the private registry; storage is shared by every devcluster."""

    def __init__(self, state_dir: Path, processes: Processes, ca: CertificateAuthority,
                 public_address: str, private_address: str, storage: Path) -> None:
        self.root = state_dir / "registry"
        self.processes = processes
        self.ca = ca
        self.public = Registry("registry-public", public_address, (PUBLIC_HOST,), {},
                               ca.cert_file)
        self.private = Registry("registry-private", private_address,
                                (PRIVATE_HOST, *ECR_HOSTS), dict(PRIVATE_USERS), ca.cert_file)
        self.storage = storage

    @property
    def hosts(self) -> dict[str, str]:
        """Registry host name → loopback IP, for the node's /etc/hosts."""
        return {host: reg.address.rsplit(":", 1)[0]
                for reg in (self.public, self.private) for host in reg.hosts}

    def by_host(self, host: str) -> Registry:
        return self.private if host in self.private.hosts else self.public

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for registry in (self.public, self.private):
            self._start(registry)
        deadline = time.monotonic() + timeout
        for registry in (self.public, self.private):
            while True:
                try:
                    status, _, _ = registry.request("GET", "/v2/", timeout=2)
                    if status == 200:
                        break
                except OSError:
                    pass
                if not self.processes.alive(registry.name) or time.monotonic() > deadline:
                    raise DevClusterError(f"{registry.name} did not start:\n"
                                          f"{self.processes.tail(registry.name)}")
                time.sleep(0.1)

    def stop(self) -> None:
        for registry in (self.public, self.private):
            self.processes.stop(registry.name)

    def _start(self, registry: Registry) -> None:
        cert = self.ca.issue(registry.name, name(registry.hosts[0]),
                             server_names=[*registry.hosts, registry.address.split(":")[0]])
        storage = self.storage / registry.name.removeprefix("registry-")
        storage.mkdir(parents=True, exist_ok=True)
        config: dict = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(storage)},
                        "delete": {"enabled": True}, "cache": {"blobdescriptor": "inmemory"}},
            "http": {"addr": registry.address,
                     "secret": hashlib.sha256(str(self.root).encode()).hexdigest(),
                     "tls": {"certificate": f"{cert}.crt", "key": f"{cert}.key"}},
        }
        if registry.users:
            htpasswd = self.root / f"{registry.name}.htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                for user, pw in registry.users.items()))
            config["auth"] = {"htpasswd": {"realm": "studio-devcluster", "path": str(htpasswd)}}
        path = self.root / f"{registry.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.processes.start(registry.name, ["docker-registry", "serve", str(path)])


def docker_config_json(registry: Registry, host: str | None = None) -> str:
    """A ``.dockerconfigjson`` with the registry's credentials for ``host``."""
    user, password = registry.credentials() or ("", "")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host or registry.hosts[0]: {
        "username": user, "password": password, "auth": auth}}})
