"""A real kube-apiserver + etcd on loopback, for tests and local development.

No Docker needed: the binaries are built from the Go module proxy by ``devcluster/build.sh``
(see ``docs/devcluster.md``). There is no controller-manager, scheduler or kubelet.

Public API::

    from studio_spawner.devcluster import DevCluster

    with DevCluster() as cluster:          # or DevCluster(state_dir="/tmp/dc") to keep state
        cluster.kubeconfig                 # Path of an admin kubeconfig (system:masters)
        cluster.server                     # "https://127.0.0.1:<port>"
        cluster.ca_file                    # Path of the CA certificate (PEM)
        cluster.state_dir                  # certs/, etcd/, logs/{etcd,kube-apiserver}.log
        cluster.request("GET", "/api/v1/namespaces")           # admin call, returns JSON
        cluster.issue_kubeconfig("alice", groups=["devs"])     # client-cert user, no rights

``start()``/``stop()`` can be used instead of ``with``. ``find_binaries()`` returns the directory
holding ``kube-apiserver`` and ``etcd`` (building them when missing, unless ``build=False``).

Environment: ``STUDIO_DEVCLUSTER_BIN_DIR`` (use prebuilt binaries from this directory),
``STUDIO_DEVCLUSTER_CACHE`` (build cache root, passed through to build.sh).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GO_MODULE_DIR = Path(__file__).resolve().parents[2] / "devcluster"
SERVICE_CIDR = "10.0.0.0/24"


class DevClusterError(RuntimeError):
    """The devcluster could not be built or started."""


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "studio-spawner" / "devcluster"
    return Path(os.environ.get("STUDIO_DEVCLUSTER_CACHE") or default)


def find_binaries(build: bool = True, log: IO[str] | None = None) -> Path:
    """Return the directory holding ``kube-apiserver`` and ``etcd``, building them if needed."""
    if env := os.environ.get("STUDIO_DEVCLUSTER_BIN_DIR"):
        candidates = [Path(env)]
    else:
        go_sum = GO_MODULE_DIR / "go.sum"
        if not go_sum.exists():
            raise DevClusterError(f"{go_sum} not found; set STUDIO_DEVCLUSTER_BIN_DIR")
        key = hashlib.sha256(go_sum.read_bytes()).hexdigest()[:16]
        candidates = [_cache_root() / key / "bin"]
    for bin_dir in candidates:
        if all(os.access(bin_dir / name, os.X_OK) for name in ("kube-apiserver", "etcd")):
            return bin_dir
    if not build or "STUDIO_DEVCLUSTER_BIN_DIR" in os.environ:
        raise DevClusterError(f"devcluster binaries not found in {candidates[0]}")
    proc = subprocess.run(
        ["bash", str(GO_MODULE_DIR / "build.sh")],
        stdout=subprocess.PIPE, stderr=log or sys.stderr, text=True,
    )
    if proc.returncode != 0:
        raise DevClusterError(f"devcluster/build.sh failed with exit code {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


# --- PKI ---------------------------------------------------------------------------------------

def _write_key(path: str | Path, key: Any) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, readable by the owner only."""
    Path(path).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    Path(path).chmod(0o600)


def _cert(
    subject: x509.Name, key: Any, issuer: x509.Certificate | None, issuer_key: Any,
    *, ca: bool = False, server_names: Sequence[str] = (), client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650 if ca else 365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = dict(key_cert_sign=True, crl_sign=True, key_encipherment=False)
    else:
        usage = dict(key_cert_sign=False, crl_sign=False, key_encipherment=True)
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    builder = builder.add_extension(
        x509.KeyUsage(digital_signature=True, content_commitment=False, data_encipherment=False,
                      key_agreement=False, encipher_only=False, decipher_only=False, **usage),
        critical=True,
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _matches(selector: dict[str, Any], obj: dict[str, Any]) -> bool:
    """Whether a label selector with ``matchLabels`` only matches ``obj``."""
    labels = obj["metadata"].get("labels") or {}
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _main_thread_on_linux() -> bool:
    """PR_SET_PDEATHSIG fires when the *thread* that forked exits: use it from the main one only."""
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the child when the Python process dies."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --- the cluster -------------------------------------------------------------------------------

class DevCluster:
    """etcd + kube-apiserver on 127.0.0.1, with an admin kubeconfig. See the module docstring."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        bin_dir: str | os.PathLike[str] | None = None,
        build: bool = True,
        start_timeout: float = 90.0,
        apiserver_args: Sequence[str] = (),
        log: IO[str] | None = None,
    ) -> None:
        """``state_dir`` is kept (and reused) when given; otherwise a temp dir is removed on stop.

        ``apiserver_args`` are appended to the kube-apiserver flags (later flags win).
        ``log`` receives build progress (default: stderr).
        """
        self._given_state_dir = Path(state_dir) if state_dir is not None else None
        self._bin_dir = Path(bin_dir) if bin_dir is not None else None
        self._build = build
        self._start_timeout = start_timeout
        self._apiserver_args = list(apiserver_args)
        self._log = log
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._state_dir: Path | None = None
        self.port = 0
        self.etcd_url = ""

    # -- paths and URLs

    @property
    def state_dir(self) -> Path:
        """Directory with ``certs/``, ``etcd/``, ``logs/`` and ``kubeconfig``."""
        if self._state_dir is None:
            raise DevClusterError("the devcluster is not started")
        return self._state_dir

    @property
    def server(self) -> str:
        """The API server URL, ``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """Path of the admin kubeconfig (user ``admin`` in group ``system:masters``)."""
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "certs" / "ca.crt"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    # -- lifecycle

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DevCluster:
        """Build (if needed) and start etcd and kube-apiserver; wait until ``/readyz`` is ok."""
        if self._procs:
            return self
        bin_dir = self._bin_dir or find_binaries(self._build, self._log)
        if self._given_state_dir is not None:
            self._state_dir = self._given_state_dir.resolve()
            self._state_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._state_dir = Path(tempfile.mkdtemp(prefix="studio-devcluster-"))
        try:
            self.log_dir.mkdir(exist_ok=True)
            ports = self._ports()
            self.port = ports["apiserver"]
            self.etcd_url = f"http://127.0.0.1:{ports['etcd']}"
            self._make_pki()
            self._start_etcd(bin_dir, ports)
            self._start_apiserver(bin_dir)
            self._wait_ready()
            self._write_kubeconfig(self.kubeconfig, "admin", self._cert_dir / "admin")
            self._ensure_default_namespace()
            self.aggregate_cluster_roles()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop kube-apiserver then etcd (SIGTERM, then SIGKILL); remove a temporary state dir."""
        for name in ("kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._state_dir is not None and self._given_state_dir is None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of ``etcd`` and ``kube-apiserver`` while started."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def running(self) -> bool:
        """True while both processes are alive."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    # -- client helpers

    def ssl_context(self, user_dir: Path | None = None) -> ssl.SSLContext:
        """An SSL context trusting the cluster CA, with the admin (or given) client cert."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        base = user_dir or self._cert_dir / "admin"
        ctx.load_cert_chain(f"{base}.crt", f"{base}.key")
        return ctx

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the API as admin; return decoded JSON (or text). Raises ``HTTPError``."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
            raw = resp.read()
            if "json" in resp.headers.get("Content-Type", ""):
                return json.loads(raw)
            return raw.decode()

    def aggregate_cluster_roles(self) -> None:
        """Fill aggregated ClusterRoles (``admin``, ``edit``, ``view``...) once.

        Their rules are normally kept up to date by kube-controller-manager, which does not run
        here; ``start()`` calls this once. Call again after adding ``aggregate-to-*`` roles.
        """
        path = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
        for _ in range(5):  # aggregated roles can aggregate others (edit -> admin): fixpoint
            roles = self.request("GET", path)["items"]
            changed = False
            for role in roles:
                selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
                rules = [rule for other in roles if other is not role
                         and any(_matches(sel, other) for sel in selectors)
                         for rule in other.get("rules") or []]
                if selectors and rules != (role.get("rules") or []):
                    role["rules"] = rules
                    self.request("PUT", f"{path}/{role['metadata']['name']}", role)
                    changed = True
            if not changed:
                return

    def issue_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """Write a kubeconfig for a client-cert user (CN=user, O=groups); return its path.

        The user has no permissions beyond those of ``system:authenticated`` until bound by RBAC.
        """
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        base = self._cert_dir / f"user-{safe}"
        self._issue(base, _name(user, groups), client=True)
        return self._write_kubeconfig(self.state_dir / f"kubeconfig-{safe}", user, base)

    # -- internals

    @property
    def _cert_dir(self) -> Path:
        return self.state_dir / "certs"

    def _ports(self) -> dict[str, int]:
        """Pick free loopback ports, reusing those of a previous run of a kept state dir."""
        saved = self.state_dir / "ports.json"
        old: dict[str, int] = json.loads(saved.read_text()) if saved.exists() else {}
        ports: dict[str, int] = {}
        for name in ("apiserver", "etcd", "etcd-peer"):
            port = old.get(name, 0)
            taken = set(ports.values())
            while not port or port in taken or not _port_free(port):
                port = _free_port()
            ports[name] = port
        saved.write_text(json.dumps(ports))
        return ports

    def _issue(self, base: Path, subject: x509.Name, **kw: Any) -> None:
        ca_key = serialization.load_pem_private_key((self._cert_dir / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, ca, ca_key, **kw)
        _write_key(f"{base}.key", key)
        Path(f"{base}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _make_pki(self) -> None:
        """CA, serving cert, admin client cert and service-account keys (kept if present)."""
        d = self._cert_dir
        d.mkdir(mode=0o700, exist_ok=True)
        if not (d / "ca.key").exists():
            key = ec.generate_private_key(ec.SECP256R1())
            ca = _cert(_name("studio-devcluster-ca"), key, None, key, ca=True)
            (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
            _write_key(d / "ca.key", key)
        if not (d / "apiserver.crt").exists():
            names = ["127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default",
                     "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
            self._issue(d / "apiserver", _name("kube-apiserver"), server_names=names)
        if not (d / "admin.crt").exists():
            self._issue(d / "admin", _name("admin", ["system:masters"]), client=True)
        if not (d / "sa.key").exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_key(d / "sa.key", key)
            (d / "sa.pub").write_bytes(key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        with log:
            self._procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _main_thread_on_linux() else None,
            )

    def _start_etcd(self, bin_dir: Path, ports: dict[str, int]) -> None:
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn("etcd", [
            str(bin_dir / "etcd"),
            "--name=devcluster",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            "--unsafe-no-fsync",  # a throwaway dev store: trade durability for speed
            "--log-level=warn",
        ])

    def _start_apiserver(self, bin_dir: Path) -> None:
        d = self._cert_dir
        self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # Endpoints may not point at 127.0.0.1
            f"--secure-port={self.port}",
            f"--cert-dir={d}",
            f"--tls-cert-file={d / 'apiserver.crt'}",
            f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            *self._apiserver_args,
        ])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise DevClusterError(
                        f"{name} exited with code {proc.returncode}:\n{self._tail(name)}")
            try:
                self.request("GET", "/readyz", timeout=2)
                return
            except urllib.error.HTTPError as exc:
                last = exc.read().decode(errors="replace")[-2000:]
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise DevClusterError(
            f"kube-apiserver not ready after {self._start_timeout:.0f}s: {last}\n"
            f"{self._tail('kube-apiserver')}")

    def _tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _write_kubeconfig(self, path: Path, user: str, cert_base: Path) -> Path:
        def b64(p: str) -> str:
            return base64.b64encode(Path(p).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devcluster", "cluster": {
                "server": self.server, "certificate-authority-data": b64(str(self.ca_file))}}],
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

    def _ensure_default_namespace(self) -> None:
        try:
            self.request("GET", "/api/v1/namespaces/default")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
            with contextlib.suppress(urllib.error.HTTPError):  # 409: created meanwhile
                self.request("POST", "/api/v1/namespaces", body)
