"""Pure parts of the devcluster kubelet: images, filesystem plan, env, status; and the container
start helper run for real (a private mount namespace needs root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio_spawner.devcluster import container_exec
from studio_spawner.devcluster.fsplan import Bind, plan_filesystem
from studio_spawner.devcluster.images import ImageRegistry, normalize, repository
from studio_spawner.devcluster.podenv import (
    ConfigError,
    IpPool,
    bind_to_pod_ip,
    container_argv,
    container_env,
    expand,
)
from studio_spawner.devcluster.status import (
    ContainerRecord,
    PodState,
    Terminated,
    log_tail,
    pod_phase,
    termination_message,
)
from studio_spawner.devcluster.volumes import Volume, container_binds, project

# -- images ----------------------------------------------------------------------------------


def test_image_lookup_exact_repository_and_pattern(tmp_path: Path) -> None:
    (tmp_path / "scipy").mkdir()
    images = tmp_path / "images.yaml"
    images.write_text(
        "images:\n"
        "  quay.io/jupyter/scipy-notebook: scipy\n"
        "  'busybox:1.36': {}\n"
        "  'demo/*': {path: /srv/demo, env: {A: '1'}, command: [sh]}\n")
    reg = ImageRegistry(images)
    found = reg.lookup("quay.io/jupyter/scipy-notebook:2024-07-29")
    assert found is not None and found.path == tmp_path / "scipy"
    assert found.ref == "quay.io/jupyter/scipy-notebook:2024-07-29"
    assert reg.lookup("docker.io/library/busybox:1.36") is not None
    assert reg.lookup("busybox:1.37") is None  # exact keys do not match other tags
    demo = reg.lookup("demo/x:1")
    assert demo is not None and demo.env == {"A": "1"} and demo.command == ["sh"]
    assert reg.lookup("quay.io/other/image:1") is None


def test_image_file_is_reloaded(tmp_path: Path) -> None:
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"a": {}}))
    reg = ImageRegistry(images)
    assert reg.lookup("b") is None
    images.write_text(json.dumps({"a": {}, "b": {}}))
    os.utime(images, (1, 1))
    assert reg.lookup("b:latest") is not None


def test_reference_normalization() -> None:
    assert normalize("busybox") == "busybox:latest"
    assert normalize("docker.io/library/busybox:1") == "busybox:1"
    assert normalize("localhost:5000/x") == "localhost:5000/x:latest"
    assert repository("localhost:5000/x:1") == "localhost:5000/x"
    assert repository("quay.io/a/b@sha256:abc") == "quay.io/a/b"


# -- filesystem plan -------------------------------------------------------------------------

HOST = {"/", "/opt", "/home", "/etc", "/etc/hosts", "/tmp", "/tmp/state"}


def fake_exists(path: str) -> bool:
    return path in HOST or path.startswith("/img")


def test_plan_overlays_image_dirs_and_missing_mount_points() -> None:
    image_entries = {"/img/opt", "/img/opt/conda"}
    plan = plan_filesystem(
        None, [Bind("/v/home", "/home/jovyan"), Bind("/v/s", "/etc/studio", True),
               Bind("/v/d", "/workspace/data/genomes"), Bind("/v/h", "/etc/hosts"),
               Bind("/v/t", "/dev/termination-log")],
        "/tmp/state/c", exists=fake_exists, isdir=lambda p: p in HOST | image_entries)
    targets = {o.target: o.lower for o in plan.overlays}
    assert targets == {"/home": ("/home",), "/etc": ("/etc",), "/workspace": ("/workspace",)}
    assert plan.host_mkdirs == ["/workspace"]  # the one top-level directory created on the host
    # parents are mounted before children
    assert [b.target for b in plan.binds][-1] == "/workspace/data/genomes"


def test_plan_image_layers_and_scratch_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "listdir", lambda p: ["opt", "usr", "dev"])
    dirs = {"/img", "/img/opt", "/img/usr", "/img/dev", "/opt", "/tmp", "/tmp/state"}
    plan = plan_filesystem("/img", [Bind("/v", "/tmp/work/x")], "/tmp/state/c",
                           exists=lambda p: p in dirs or p == "/",
                           isdir=lambda p: p in dirs)
    lower = {o.target: o.lower for o in plan.overlays}
    assert lower == {"/opt": ("/img/opt", "/opt"), "/usr": ("/img/usr", "/usr")}
    assert "/usr" in plan.host_mkdirs  # image-only top-level dir needs a host placeholder
    # /tmp holds the scratch dir: no overlay there, the mount point is made on the host
    assert "/tmp/work" in plan.host_mkdirs


# -- env and command -------------------------------------------------------------------------

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"a": "b"}},
       "spec": {"nodeName": "devnode"}}


def test_env_sources_expansion_and_any_address_rewrite() -> None:
    container = {
        "env": [
            {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/user/x/"},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
            {"name": "BOTH", "value": "$(NAME)-$(NOPE)-$$(NAME)"},
        ],
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "command": ["srv", "--bind=$(IP)"], "args": ["--ip", "0.0.0.0", "10.0.0.0"],
    }
    objects = {("Secret", "s"): {"data": {"t": "c2VjcmV0"}},
               ("ConfigMap", "cm"): {"data": {"K": "v"}}}
    env = container_env(POD, container, {"FROM_IMAGE": "1"}, objects, "127.0.0.12")
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.12:8888/user/x/"
    assert env["NAME"] == "p" and env["IP"] == "127.0.0.12" and env["LBL"] == "b"
    assert env["TOKEN"] == "secret" and env["CM_K"] == "v" and env["FROM_IMAGE"] == "1"
    assert env["BOTH"] == "p-$(NOPE)-$(NAME)"
    assert env["PATH"].endswith("/bin")
    argv = container_argv(container, None, None, env, "127.0.0.12")
    assert argv == ["srv", "--bind=127.0.0.12", "--ip", "127.0.0.12", "10.0.0.0"]


def test_missing_secret_is_a_config_error_unless_optional() -> None:
    ref = {"name": "T", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}
    with pytest.raises(ConfigError, match='secret "gone" not found'):
        container_env(POD, {"env": [ref]}, {}, {("Secret", "gone"): None}, None)
    ref["valueFrom"]["secretKeyRef"]["optional"] = True
    assert "T" not in container_env(POD, {"env": [ref]}, {}, {("Secret", "gone"): None}, None)


def test_image_entrypoint_rules() -> None:
    assert container_argv({"args": ["x"]}, ["ep"], ["cmd"], {}, None) == ["ep", "x"]
    assert container_argv({}, ["ep"], ["cmd"], {}, None) == ["ep", "cmd"]
    assert container_argv({"command": ["c"]}, ["ep"], ["cmd"], {}, None) == ["c"]
    assert expand("$(A)$(B)", {"A": "1"}) == "1$(B)"
    assert bind_to_pod_ip("0.0.0.0:80 10.0.0.0", "127.0.0.9") == "127.0.0.9:80 10.0.0.0"


def test_ip_pool_allocates_distinct_and_reuses_freed() -> None:
    pool = IpPool("127.0.0.10", "127.0.0.12")
    a, b = pool.allocate("a"), pool.allocate("b")
    assert a != b and pool.allocate("a") == a
    pool.release("a")
    assert pool.allocate("c") == "127.0.0.12"
    assert pool.allocate("d") == a
    with pytest.raises(RuntimeError):
        pool.allocate("e")


# -- volumes ---------------------------------------------------------------------------------


def test_container_binds_sub_paths_and_read_only() -> None:
    vols = {"home": Volume(Path("/s/pvc")), "files": Volume(Path("/s/sec"), readonly=True)}
    binds = container_binds({"volumeMounts": [
        {"name": "home", "mountPath": "/home/jovyan", "subPath": "users/$(U)"},
        {"name": "home", "mountPath": "/w", "subPathExpr": "users/$(U)", "readOnly": True},
        {"name": "files", "mountPath": "/etc/studio"},
    ]}, vols, {"U": "ann"})
    assert binds == [Bind("/s/pvc/users/$(U)", "/home/jovyan"),
                     Bind("/s/pvc/users/ann", "/w", True), Bind("/s/sec", "/etc/studio", True)]
    with pytest.raises(ValueError):
        container_binds({"volumeMounts": [{"name": "home", "mountPath": "/x",
                                           "subPath": "../up"}]}, vols, {})


def test_secret_items_and_modes() -> None:
    data = {"a": b"1", "b": b"2"}
    assert project(data, None, 0o400, "s") == {"a": (b"1", 0o400), "b": (b"2", 0o400)}
    assert project(data, [{"key": "b", "path": "d/b.txt", "mode": 0o600}], 0o644, "s") == \
        {"d/b.txt": (b"2", 0o600)}


# -- status ----------------------------------------------------------------------------------


def test_log_tail_limits() -> None:
    log = b"".join(f"line {i}\n".encode() for i in range(200))
    tail = log_tail(log)
    assert tail.endswith("line 199\n") and "line 119\n" not in tail and "line 120\n" in tail
    assert len(log_tail(b"x" * 5000 + b"\n").encode()) == 2048


def test_termination_message_file_wins_then_logs_on_error() -> None:
    assert termination_message(b"msg", b"log", "FallbackToLogsOnError", True) == "msg"
    assert termination_message(b"", b"log\n", "FallbackToLogsOnError", True) == "log\n"
    assert termination_message(b"", b"log\n", "FallbackToLogsOnError", False) is None
    assert termination_message(b"", b"log\n", "File", True) is None


def test_phase_and_conditions() -> None:
    def rec(state: str, code: int | None = None) -> ContainerRecord:
        r = ContainerRecord("c", "img")
        if state == "running":
            r.run("id")
            r.ready = True
        elif state == "terminated":
            r.terminate(Terminated(code or 0, "Error" if code else "Completed", None, "t"))
        return r

    assert pod_phase("Always", False, False, [rec("waiting")]) == "Pending"
    assert pod_phase("Always", False, True, [rec("running")]) == "Running"
    assert pod_phase("Never", False, True, [rec("terminated", 1)]) == "Failed"
    assert pod_phase("OnFailure", False, True, [rec("terminated", 0)]) == "Succeeded"
    assert pod_phase("Never", True, False, [rec("waiting")]) == "Failed"
    crashed = rec("terminated", 2)
    crashed.restart_waiting("CrashLoopBackOff", "back-off")
    assert pod_phase("Always", False, True, [crashed]) == "Running"
    assert crashed.to_json()["lastState"]["terminated"]["exitCode"] == 2
    assert crashed.to_json()["restartCount"] == 1

    init = rec("terminated", 0)
    init.name = "init"
    state = PodState("Always", [init], [rec("running")], pod_ip="127.0.0.10",
                     sandbox_ready=True)
    status = state.to_status()
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds == {"PodReadyToStartContainers": "True", "Initialized": "True",
                     "Ready": "True", "ContainersReady": "True", "PodScheduled": "True"}
    assert status["phase"] == "Running" and status["podIP"] == "127.0.0.10"
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


# -- the start helper, for real --------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


@needs_root
def test_helper_overlays_image_binds_read_only_and_isolates(tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "opt" / "devdemo" / "bin").mkdir(parents=True)
    tool = image / "opt" / "devdemo" / "bin" / "hello"
    tool.write_text("#!/bin/sh\necho hello-from-image\n")
    tool.chmod(0o755)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("s3cret")
    home = tmp_path / "home"
    home.mkdir()
    binds = [Bind(str(home), "/home/devcluster-test-user"),
             Bind(str(secret), "/etc/devcluster-test", readonly=True)]
    plan = plan_filesystem(image, binds, tmp_path / "scratch")
    script = ("/opt/devdemo/bin/hello; cat /etc/devcluster-test/key; echo; "
              "echo x > /etc/devcluster-test/new 2>/dev/null || echo EROFS-ok; "
              "echo data > /home/devcluster-test-user/f; hostname; pwd")
    spec = {**plan.to_json(), "hostname": "mypod", "cwd": "/home/devcluster-test-user",
            "argv": ["/bin/sh", "-c", script], "env": {"PATH": "/usr/bin:/bin"},
            "error_file": str(tmp_path / "err")}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, "-I", container_exec.__file__, str(spec_file)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["hello-from-image", "s3cret", "EROFS-ok", "mypod",
                                  "/home/devcluster-test-user"]
    assert (home / "f").read_text() == "data\n"
    assert not os.path.exists("/opt/devdemo")  # nothing leaked into the host
    assert not os.path.exists("/home/devcluster-test-user")


@needs_root
def test_helper_reports_missing_executable(tmp_path: Path) -> None:
    spec = {"argv": ["no-such-binary"], "env": {"PATH": "/usr/bin"},
            "error_file": str(tmp_path / "err"), "cwd": "/"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, "-I", container_exec.__file__,
                          str(tmp_path / "spec.json")], capture_output=True, text=True)
    assert out.returncode == 128
    assert 'exec: "no-such-binary": executable file not found in $PATH' in \
        (tmp_path / "err").read_text()
