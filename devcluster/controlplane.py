"""The control plane: etcd, kube-apiserver, kube-scheduler and kube-controller-manager.

All bind to 127.0.0.1 and run as plain processes; the binaries come from ``build.sh``.
Node authorization and NodeRestriction are on, so a kubelet has exactly a node's rights.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from .pki import CertificateAuthority, name
from .processes import Processes

GO_MODULE_DIR = Path(__file__).resolve().parent
SERVICE_CIDR = "10.0.0.0/24"
BINARIES = ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager", "kubelet",
            "kubectl", "pause", "s3-csi-standin")


class DevClusterError(RuntimeError):
    """The devcluster could not be built or started."""


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "studio-spawner" / "devcluster"
    return Path(os.environ.get("STUDIO_DEVCLUSTER_CACHE") or default)


def find_binaries(build: bool = True, log: IO[str] | None = None) -> Path:
    """The directory holding the devcluster's binaries.

    ``build.sh`` decides: it returns at once when every binary is current, and (re)builds what
    is missing or older than its source. ``STUDIO_DEVCLUSTER_BIN_DIR`` names prebuilt binaries.
    """
    if env := os.environ.get("STUDIO_DEVCLUSTER_BIN_DIR"):
        bin_dir = Path(env)
        if not all(os.access(bin_dir / b, os.X_OK) for b in BINARIES):
            raise DevClusterError(f"devcluster binaries not found in {bin_dir}")
        return bin_dir
    if not build:
        key = hashlib.sha256((GO_MODULE_DIR / "go.sum").read_bytes()).hexdigest()[:16]
        bin_dir = _cache_root() / key / "bin"
        if not all(os.access(bin_dir / b, os.X_OK) for b in BINARIES):
            raise DevClusterError(f"devcluster binaries not found in {bin_dir}")
        return bin_dir
    proc = subprocess.run(["bash", str(GO_MODULE_DIR / "build.sh")], stdout=subprocess.PIPE,
                          stderr=log or sys.stderr, text=True)
    if proc.returncode != 0:
        raise DevClusterError(f"devcluster/build.sh failed with exit code {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ControlPlane:
    """etcd, kube-apiserver, kube-scheduler and kube-controller-manager on 127.0.0.1."""

    def __init__(self, state_dir: Path, bin_dir: Path, processes: Processes,
                 apiserver_args: Sequence[str] = (), start_timeout: float = 90.0) -> None:
        self.state_dir = state_dir
        self.bin_dir = bin_dir
        self.processes = processes
        self.ca = CertificateAuthority(state_dir / "certs")
        self._apiserver_args = list(apiserver_args)
        self._start_timeout = start_timeout
        self.port = 0

    # -- addresses and credentials

    @property
    def server(self) -> str:
        """The API server URL, ``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``admin`` in ``system:masters``)."""
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_file

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the cluster CA and presents the admin client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        base = self.ca.directory / "admin"
        ctx.load_cert_chain(f"{base}.crt", f"{base}.key")
        return ctx

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0,
                content_type: str = "application/json") -> Any:
        """Call the API as admin; return decoded JSON (or text). Raises ``HTTPError``."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
            raw = resp.read()
            if "json" in resp.headers.get("Content-Type", ""):
                return json.loads(raw)
            return raw.decode()

    def issue_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for a client-certificate user (CN=user, O=groups), no rights by itself."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        base = self.ca.issue(f"user-{safe}", name(user, groups), client=True)
        return self.write_kubeconfig(self.state_dir / f"kubeconfig-{safe}", user, base)

    def write_kubeconfig(self, path: Path, user: str, cert_base: Path) -> Path:
        def b64(p: str | Path) -> str:
            return base64.b64encode(Path(p).read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "devcluster", "cluster": {
                "server": self.server, "certificate-authority-data": b64(self.ca_file)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(f"{cert_base}.crt"),
                "client-key-data": b64(f"{cert_base}.key")}}],
            "contexts": [{"name": "devcluster", "context": {
                "cluster": "devcluster", "user": user, "namespace": "default"}}],
            "current-context": "devcluster",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # -- lifecycle

    def start(self) -> None:
        """Start etcd and kube-apiserver, wait for ``/readyz``, then scheduler and controllers."""
        ports = self._ports()
        self.port = ports["apiserver"]
        certs = self.ca.directory
        self.ca.issue("apiserver", name("kube-apiserver"), server_names=[
            "127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"])
        self.ca.issue("admin", name("admin", ["system:masters"]), client=True)
        # The API server's client certificate towards kubelets (logs, exec, port-forward).
        self.ca.issue("apiserver-kubelet-client", name("kube-apiserver-kubelet-client",
                                                       ["kubeadm:cluster-admins"]), client=True)
        sa_key, sa_pub = self.ca.service_account_keys()
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        self.processes.start("etcd", [
            str(self.bin_dir / "etcd"), "--name=devcluster",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            "--unsafe-no-fsync",  # a throwaway dev store: trade durability for speed
            "--log-level=warn"])
        self.processes.start("kube-apiserver", [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # Endpoints may not point at 127.0.0.1
            f"--secure-port={self.port}", f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={certs / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={certs / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={self.ca_file}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            *self._apiserver_args])
        self._wait_ready()
        self.write_kubeconfig(self.kubeconfig, "admin", certs / "admin")
        self._bind_kubelet_api_access()
        for component in ("kube-scheduler", "kube-controller-manager"):
            user = f"system:{component}"
            base = self.ca.issue(component, name(user), client=True)
            config = self.write_kubeconfig(self.state_dir / f"kubeconfig-{component}", user, base)
            self.processes.start(component, self._component_argv(component, config, sa_key))

    def stop(self) -> None:
        for component in ("kube-controller-manager", "kube-scheduler", "kube-apiserver", "etcd"):
            self.processes.stop(component, timeout=15)

    def _component_argv(self, component: str, kubeconfig: Path, sa_key: Path) -> list[str]:
        common = [str(self.bin_dir / component), f"--kubeconfig={kubeconfig}",
                  f"--authentication-kubeconfig={kubeconfig}",
                  f"--authorization-kubeconfig={kubeconfig}",
                  "--leader-elect=false", "--bind-address=127.0.0.1",
                  f"--secure-port={free_port()}", "--v=1"]
        if component == "kube-scheduler":
            return common
        return [*common,
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={self.ca_file}",
                f"--cluster-signing-cert-file={self.ca_file}",
                f"--cluster-signing-key-file={self.ca.directory / 'ca.key'}",
                "--use-service-account-credentials=true",  # one identity per controller
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
                "--node-monitor-grace-period=40s"]

    def _bind_kubelet_api_access(self) -> None:
        """Let the API server's kubelet client reach kubelets (what kubeadm binds)."""
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "devcluster:apiserver-kubelet-client"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "kube-apiserver-kubelet-client"}]}
        try:
            self.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def _ports(self) -> dict[str, int]:
        """Free loopback ports, reusing those of a previous run of a kept state dir."""
        saved = self.state_dir / "ports.json"
        old: dict[str, int] = json.loads(saved.read_text()) if saved.exists() else {}
        ports: dict[str, int] = {}
        for key in ("apiserver", "etcd", "etcd-peer"):
            port = old.get(key, 0)
            while not port or port in ports.values() or not _port_free(port):
                port = free_port()
            ports[key] = port
        saved.write_text(json.dumps(ports))
        return ports

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        last = ""
        while time.monotonic() < deadline:
            for proc, code in self.processes.exited().items():
                raise DevClusterError(
                    f"{proc} exited with code {code}:\n{self.processes.tail(proc)}")
            try:
                self.request("GET", "/readyz", timeout=2)
                return
            except urllib.error.HTTPError as exc:
                last = exc.read().decode(errors="replace")[-2000:]
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise DevClusterError(f"kube-apiserver not ready after {self._start_timeout:.0f}s: "
                              f"{last}\n{self.processes.tail('kube-apiserver')}")
