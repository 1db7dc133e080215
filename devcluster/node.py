"""The node: a real kubelet on containerd and runc, in a private mount namespace.

Nothing on the host is changed: the kubelet and containerd run inside a mount namespace where
the three kernel tunables the kubelet insists on read as already set, and where ``/run``,
``/var/lib`` and ``/var/log`` are private tmpfs mounts (the fixed paths the kubelet and
containerd write), ``/etc/hosts`` names the devcluster's registries and the CA bundle trusts the
devcluster's CA (as a node of a company with its own registry would). Pods get addresses on
a bridge of our own (no gateway, no masquerade, no iptables): they reach the host's address on
that bridge and each other, nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import yaml

from .controlplane import ControlPlane, DevClusterError, free_port
from .pki import name
from .processes import Processes

NODE_NAME = "devnode"
CNI_BIN_DIR = "/usr/lib/cni"
PAUSE_IMAGE = "registry.studio.test/pause:3.10"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LOCK_DIR = Path("/run/lock/studio-devcluster")
# What the kubelet would write to the real /proc/sys; inside the namespace they read as set.
SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}


class Network:
    """The node's bridge ``sdc<N>`` with 10.244.<N>.1/24, and a loopback address per registry.

    ``N`` is held with a lock file for the devcluster's lifetime, so two devclusters on one
    machine never share a bridge, subnet or registry address; a kept state dir reuses its ``N``
    when it is free. ``reserve=False`` only reads the saved ``N`` (to tear down).
    """

    def __init__(self, state_dir: Path, reserve: bool = True) -> None:
        saved = state_dir / "network.json"
        wanted = json.loads(saved.read_text())["index"] if saved.exists() else None
        self._lock: IO[str] | None = None
        if not reserve:
            if wanted is None:
                raise DevClusterError(f"no devcluster network recorded in {state_dir}")
            self.index = wanted
            return
        self.index = self._reserve(wanted)
        saved.write_text(json.dumps({"index": self.index}))

    def _reserve(self, wanted: int | None) -> int:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        links = _run(["ip", "-o", "link", "show"]).stdout
        candidates = [wanted] if wanted is not None else []
        for index in [*candidates, *range(10, 250)]:
            lock = open(LOCK_DIR / f"{index}.lock", "w")  # noqa: SIM115 - held while running
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            if index != wanted and f" sdc{index}:" in links:
                lock.close()  # a bridge left by a devcluster that died: not ours to reuse
                continue
            self._lock = lock
            return index
        raise DevClusterError("no free devcluster network index (10-249 all in use)")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def bridge(self) -> str:
        return f"sdc{self.index}"

    @property
    def host_ip(self) -> str:
        """The host's address on the bridge: node IP, kubelet, and what pods can reach."""
        return f"10.244.{self.index}.1"

    @property
    def subnet(self) -> str:
        return f"10.244.{self.index}.0/24"

    def loopback(self, last: int) -> str:
        """A loopback address private to this devcluster (registries listen there)."""
        return f"127.42.{self.index}.{last}"

    def up(self) -> None:
        if _run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def down(self) -> None:
        _run(["ip", "link", "del", self.bridge], check=False)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DevClusterError(f"{shlex.join(argv)} failed: {proc.stderr.strip()}")
    return proc


class Node:
    """containerd and a kubelet registered as node ``devnode`` with the control plane."""

    def __init__(self, state_dir: Path, bin_dir: Path, processes: Processes,
                 control: ControlPlane | None, network: Network, hosts: Mapping[str, str],
                 registry_ca: Path) -> None:
        self.root = state_dir / "node"
        self.bin_dir = bin_dir
        self.processes = processes
        self.control = control
        self.network = network
        self.hosts = dict(hosts)
        self.registry_ca = registry_ca

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        """Where pod cgroups live in every hierarchy (one per devcluster)."""
        return f"/devcluster-{self.network.index}"

    def start(self, timeout: float = 60.0) -> None:
        """Namespace, containerd, kubelet; return once the node is Ready."""
        for sub in ("containerd", "kubelet", "pod-logs", "cni/net.d", "cni/ipam",
                    "plugins/volume/exec", "sysctl"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.network.up()
        self._create_cgroups()
        self._start_namespace()
        self._write_configs()
        self.processes.start("containerd", self._in_namespace(
            ["containerd", "--config", str(self.root / "containerd.toml")]))
        self._wait(lambda: self._ctr("version").returncode == 0, timeout, "containerd",
                   "containerd did not answer")
        self.processes.start("kubelet", self._in_namespace(self._kubelet_argv()))
        self._wait(self.ready, timeout, "kubelet", f"node {NODE_NAME} did not become Ready")

    def ready(self) -> bool:
        try:
            node = self.control.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        except (urllib.error.URLError, OSError):
            return False
        conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
        return conditions.get("Ready") == "True"

    def stop(self) -> None:
        """Delete every pod, stop kubelet and containerd, and remove what they left."""
        if self.control is not None and self.processes.alive("kube-apiserver") \
                and self.processes.alive("kubelet"):
            self._delete_all_pods()
        self.processes.stop("kubelet")
        if self.processes.alive("containerd"):  # containers outlive containerd: kill them first
            for task in self._ctr("tasks", "ls", "-q").stdout.split():
                self._ctr("tasks", "kill", "-s", "KILL", task)
            time.sleep(0.5)
            for task in self._ctr("tasks", "ls", "-q").stdout.split():
                self._ctr("tasks", "rm", "-f", task)
        self.processes.stop("containerd")
        self._kill_leftovers()  # containers of a containerd that died before it could stop them
        self.processes.stop("namespace")  # its private mounts (tmpfs, netns, volumes) go with it
        self._remove_cgroups()
        self.network.down()
        self.network.release()

    # -- internals

    def _start_namespace(self) -> None:
        if self.processes.alive("namespace"):
            return
        binds = []
        for key, value in SYSCTLS.items():
            fake = self.root / "sysctl" / key.replace("/", "_")
            fake.write_text(value + "\n")
            binds.append(f"mount --bind {shlex.quote(str(fake))} /proc/sys/{key}")
        hosts = self.root / "hosts"
        lines = ["127.0.0.1 localhost"] + [f"{ip} {host}" for host, ip in self.hosts.items()]
        hosts.write_text("\n".join(lines) + "\n")
        bundle = self.root / "ca-certificates.crt"  # the host's CAs and ours, as on a real node
        bundle.write_bytes(Path(SYSTEM_CA_BUNDLE).read_bytes() + self.registry_ca.read_bytes())
        script = " && ".join([
            *binds,
            "mount -t tmpfs -o mode=755 devcluster-run /run",
            "mount -t tmpfs -o mode=755 devcluster-varlib /var/lib",
            "mount -t tmpfs -o mode=755 devcluster-varlog /var/log",
            f"mount --bind {shlex.quote(str(hosts))} /etc/hosts",
            f"mount --bind {shlex.quote(str(bundle))} {SYSTEM_CA_BUNDLE}",
            "exec sleep infinity",
        ])
        self.processes.start("namespace", ["unshare", "--mount", "--propagation", "private",
                                           "--", "sh", "-c", script])
        self._wait(lambda: self._namespace_ready(hosts), 10, "namespace",
                   "the node's mount namespace did not come up")

    def _namespace_ready(self, hosts: Path) -> bool:
        pid = self.processes.pid("namespace")
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/root/etc/hosts").read_text() == hosts.read_text() and \
                "sleep" in Path(f"/proc/{pid}/cmdline").read_text()
        return False

    def _in_namespace(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.processes.pid("namespace")), "-m", "--", *argv]

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True)

    def _wait(self, check, timeout: float, process: str, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if not self.processes.alive(process):
                raise DevClusterError(f"{process} exited:\n{self.processes.tail(process)}")
            time.sleep(0.1)
        raise DevClusterError(f"{message} in {timeout:.0f} s:\n{self.processes.tail(process)}")

    def _write_configs(self) -> None:
        root = self.root
        state = root / "containerd"
        (root / "containerd.toml").write_text(f"""version = 2
root = "{state}/root"
state = "{state}/state"
oom_score = 0
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  restrict_oom_score_adj = true   # no CAP_SYS_RESOURCE here: never go below containerd's own
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{root}/cni/net.d"
    max_conf_num = 1
""")
        net = self.network
        (root / "cni" / "net.d" / "10-devcluster.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "devcluster",
            "plugins": [{"type": "bridge", "bridge": net.bridge, "isGateway": False,
                         "ipMasq": False, "hairpinMode": True,
                         "ipam": {"type": "host-local", "dataDir": str(root / "cni" / "ipam"),
                                  "ranges": [[{"subnet": net.subnet,
                                               "rangeStart": f"10.244.{net.index}.10",
                                               "rangeEnd": f"10.244.{net.index}.250",
                                               "gateway": net.host_ip}]],
                                  "routes": []}}]}, indent=1))
        ca = self.control.ca
        serving = ca.issue("kubelet-serving", name(f"system:node:{NODE_NAME}", ["system:nodes"]),
                           server_names=[net.host_ip, NODE_NAME])
        client = ca.issue("kubelet-client", name(f"system:node:{NODE_NAME}", ["system:nodes"]),
                          client=True)
        self.control.write_kubeconfig(root / "kubeconfig", f"system:node:{NODE_NAME}", client)
        (root / "kubelet.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False,            # this machine has cgroup v1
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": net.host_ip, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "tlsCertFile": f"{serving}.crt", "tlsPrivateKeyFile": f"{serving}.key",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(ca.cert_file)}},
            "authorization": {"mode": "Webhook"},
            "makeIPTablesUtilChains": False,  # never touch the host's iptables
            "protectKernelDefaults": True,    # never write sysctls (see the namespace)
            "oomScoreAdj": 0,                 # no CAP_SYS_RESOURCE to go lower
            "volumePluginDir": str(root / "plugins" / "volume" / "exec"),
            "podLogsDir": str(root / "pod-logs"),
            "serializeImagePulls": False,
            "registerNode": True,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                             "imagefs.available": "2%"},
            "imageGCHighThresholdPercent": 98, "imageGCLowThresholdPercent": 95,
            "nodeStatusReportFrequency": "10s", "syncFrequency": "5s",
            "fileCheckFrequency": "20s", "resolvConf": "/etc/resolv.conf",
            "clusterDomain": "cluster.local",
            "maxPods": 220,
        }, sort_keys=False))

    def _kubelet_argv(self) -> list[str]:
        return [str(self.bin_dir / "kubelet"), f"--config={self.root / 'kubelet.yaml'}",
                f"--kubeconfig={self.root / 'kubeconfig'}",
                f"--root-dir={self.root / 'kubelet'}",
                f"--hostname-override={NODE_NAME}", f"--node-ip={self.network.host_ip}",
                "--v=1"]

    def _delete_all_pods(self, timeout: float = 60.0) -> None:
        with contextlib.suppress(urllib.error.URLError, OSError):
            pods = self.control.request("GET", "/api/v1/pods")["items"]
            for pod in pods:
                meta = pod["metadata"]
                with contextlib.suppress(urllib.error.HTTPError):
                    self.control.request(
                        "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                        {"gracePeriodSeconds": 1})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.control.request(
                    "GET", "/api/v1/pods")["items"]:
                time.sleep(0.2)

    def _kill_leftovers(self) -> None:
        """SIGKILL every process in the pods' cgroups and every shim of our containerd."""
        socket = str(self.containerd_socket)
        pids: set[int] = set()
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / self.cgroup_root.lstrip("/")
            for procs in top.rglob("cgroup.procs") if top.is_dir() else ():
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(pid) for pid in procs.read_text().split())
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    if socket in (proc / "cmdline").read_bytes().decode(errors="replace"):
                        pids.add(int(proc.name))
        for pid in pids - {os.getpid()}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            time.sleep(0.5)

    def _create_cgroups(self) -> None:
        """The kubelet's cgroup root in every v1 hierarchy (cpuset needs its CPUs and nodes)."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if hierarchy.name == "unified" or not (hierarchy / "cgroup.procs").exists():
                continue
            top = hierarchy / self.cgroup_root.lstrip("/")
            top.mkdir(exist_ok=True)
            for setting in ("cpuset.cpus", "cpuset.mems"):
                if (top / setting).exists() and not (top / setting).read_text().strip():
                    (top / setting).write_text((hierarchy / setting).read_text())

    def _remove_cgroups(self) -> None:
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if not top.is_dir():
                continue
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                    key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
