"""The devcluster: control plane, registries, images, a real node and a volume provisioner.

    from devcluster import DevCluster

    with DevCluster() as cluster:             # or DevCluster(state_dir=…) to keep and reuse state
        cluster.kubeconfig                    # admin kubeconfig (system:masters)
        cluster.host_ip                       # the host on the pod bridge: where pods reach us
        cluster.image("notebook")             # "registry.studio.test/notebook:1"
        cluster.bucket_dir("team-data")       # what pods see of S3 bucket "team-data"
        cluster.request("GET", "/api/v1/pods")

Two devclusters can run side by side: each has its own ports, bridge, subnet, registry
addresses, cgroup root and mount namespace.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from . import csi
from .controlplane import ControlPlane, DevClusterError, _cache_root, find_binaries
from .images.oci import Image
from .images.recipes import Builder
from .node import NODE_NAME, PAUSE_IMAGE, Network, Node
from .processes import Processes
from .provisioner import LocalProvisioner
from .registry import PUBLIC_HOST, Registries

IMAGE_TAG = "1"


class DevCluster:
    """Everything a studio needs, on this machine. See the module docstring."""

    def __init__(self, state_dir: str | Path | None = None, *, bin_dir: str | Path | None = None,
                 build: bool = True, node: bool = True, apiserver_args: Sequence[str] = (),
                 log: IO[str] | None = None) -> None:
        self._given_state_dir = Path(state_dir).resolve() if state_dir else None
        self._bin_dir = Path(bin_dir) if bin_dir else None
        self._build = build
        self._with_node = node
        self._apiserver_args = list(apiserver_args)
        self._log = log or sys.stderr
        self.state_dir = Path()
        self.bin_dir = Path()
        self.control: ControlPlane | None = None
        self.registries: Registries | None = None
        self.node: Node | None = None
        self.network: Network | None = None
        self._provisioner: LocalProvisioner | None = None
        self._channel_server: http.server.ThreadingHTTPServer | None = None
        self._images: dict[str, Image] = {}
        self._builder: Builder | None = None
        self.timings: dict[str, float] = {}

    # -- what tests and the demo use

    @property
    def kubeconfig(self) -> Path:
        return self._control.kubeconfig

    @property
    def server(self) -> str:
        return self._control.server

    @property
    def ca_file(self) -> Path:
        return self._control.ca_file

    @property
    def host_ip(self) -> str:
        """The host's address on the pod bridge (bind the hub and test servers here)."""
        if self.network is None:
            raise DevClusterError("the devcluster runs no node")
        return self.network.host_ip

    channel_name = "studio"

    @property
    def channel_alias(self) -> str:
        """Where conda channels are served to the hub and to pods (``<alias><name>``)."""
        if self._channel_server is None:
            raise DevClusterError("the devcluster runs no node")
        return f"http://{self.host_ip}:{self._channel_server.server_address[1]}/"

    @property
    def channel_url(self) -> str:
        """The conda channel of the notebook image's packages (``studio``)."""
        return self.channel_alias + self.channel_name

    def image(self, name: str) -> str:
        """The reference of a devcluster image (``notebook``, ``tool``, ``nopython``…)."""
        return f"{PUBLIC_HOST}/{name}:{IMAGE_TAG}"

    def push_image(self, name: str, reference: str) -> str:
        """Push devcluster image ``name`` as ``reference`` (e.g. to the private registry)."""
        host, _, rest = reference.partition("/")
        repository, _, tag = rest.rpartition(":")
        registry = self._registries.by_host(host)
        return self._images[name].push(self.builder.store, registry, repository, [tag])

    def bucket_dir(self, bucket: str) -> Path:
        """The directory standing in for S3 bucket ``bucket`` on the node, made if missing:
        what studios mounting the bucket see (see csi.py)."""
        return csi.bucket_dir(self._s3_root, bucket)

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        return self._control.request(method, path, body, timeout)

    def issue_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        return self._control.issue_kubeconfig(user, groups)

    def running(self) -> bool:
        return self.control is not None and not self._processes.exited()

    # -- lifecycle

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DevCluster:
        started = time.monotonic()
        bin_dir = self.bin_dir = self._bin_dir or find_binaries(self._build, self._log)
        self.state_dir = self._given_state_dir or Path(
            tempfile.mkdtemp(prefix="studio-devcluster-", dir="/var/tmp"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._processes = Processes(self.state_dir)
        try:
            self.control = ControlPlane(self.state_dir, bin_dir, self._processes,
                                        self._apiserver_args)
            self.control.start()
            self._lap("control plane", started)
            if self._with_node:
                self._start_node(bin_dir)
            self._wait_for_default_service_account()
        except BaseException:
            self.stop()
            raise
        self._lap("ready", started)
        return self

    def stop(self) -> None:
        """Stop everything by PID and remove the node's bridge, cgroups and mounts."""
        if self._provisioner:
            self._provisioner.stop()
        if self.node:
            self.node.stop()  # the stand-in unmounts the pods' S3 volumes: stop it after
            csi.stop_s3_standin(self._processes)
        if self.registries:
            self.registries.stop()
        if self.network:
            self.network.release()
        if self._channel_server:
            self._channel_server.shutdown()
            self._channel_server.server_close()
        if self.control:
            self.control.stop()
        if self._given_state_dir is None and self.state_dir != Path():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.control = self.node = self.registries = self._provisioner = None
        self._channel_server = None

    # -- internals

    @property
    def _control(self) -> ControlPlane:
        if self.control is None:
            raise DevClusterError("the devcluster is not started")
        return self.control

    @property
    def _registries(self) -> Registries:
        if self.registries is None:
            raise DevClusterError("the devcluster runs no registry")
        return self.registries

    @property
    def builder(self) -> Builder:
        """The image builder (its cache makes an unchanged rebuild instant)."""
        if self._builder is None:
            raise DevClusterError("the devcluster has built no images")
        return self._builder

    @property
    def _s3_root(self) -> Path:
        return self.state_dir / "s3-buckets"

    def _lap(self, what: str, since: float) -> None:
        self.timings[what] = round(time.monotonic() - since, 2)

    def _start_node(self, bin_dir: Path) -> None:
        started = time.monotonic()
        self.network = Network(self.state_dir)
        self.network.up()
        self.registries = Registries(
            self.state_dir, self._processes, self._control.ca,
            f"{self.network.loopback(2)}:443", f"{self.network.loopback(3)}:443",
            _cache_root().parent / "registry")
        self.registries.start()
        self._builder = Builder(_cache_root().parent / "images", bin_dir,
                                log=lambda line: print(line, file=self._log, flush=True))
        self._images = self._builder.images()
        for name, image in self._images.items():
            image.push(self._builder.store, self.registries.public, name, [IMAGE_TAG])
        assert PAUSE_IMAGE.startswith(f"{PUBLIC_HOST}/pause:")
        self._images["pause"].push(self._builder.store, self.registries.public, "pause",
                                   [PAUSE_IMAGE.rsplit(":", 1)[1]])
        self._lap("images", started)
        self._serve_channel(self._builder.channel())
        self.node = Node(self.state_dir, bin_dir, self._processes, self._control, self.network,
                         self.registries.hosts, self._control.ca_file)
        self.node.start()
        csi.start_s3_standin(self._processes, self.node, self._control, self._s3_root)
        self._provisioner = LocalProvisioner(self._control, self.state_dir / "volumes",
                                             NODE_NAME)
        self._provisioner.start()
        self._lap("node", started)

    def _serve_channel(self, channel: Path) -> None:
        directory = self.state_dir / "channels"
        directory.mkdir(exist_ok=True)
        link = directory / self.channel_name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(channel)
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer((self.host_ip, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._channel_server = server

    def _wait_for_default_service_account(self, timeout: float = 60) -> None:
        """Pods need ``default/default`` (made by the controller-manager) before they exist."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.HTTPError):
                self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                return
            time.sleep(0.2)
        raise DevClusterError("the controller-manager made no default service account")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, no access log, never a bare 304 (rattler's sharded client needs 200s)."""

    def send_head(self):  # noqa: ANN201 - http.server's signature
        del self.headers["If-Modified-Since"]
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
