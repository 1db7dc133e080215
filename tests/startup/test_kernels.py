"""kernels: every env that can run a kernel gets a kernelspec; ours come and go, others stay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from .conftest import Studio, snapshot


def kernel_prefix(kernels: Path, name: str) -> str:
    """Start the kernel with jupyter_client from its kernelspec and ask it for sys.prefix."""
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
    km.start_kernel(env={"PATH": "/usr/bin:/bin"})
    kc = km.client()
    kc.start_channels()
    out: list[str] = []
    try:
        kc.wait_for_ready(timeout=120)
        kc.execute_interactive(
            "import sys; print(sys.prefix)",
            timeout=60,
            output_hook=lambda msg: out.append(msg["content"].get("text", "")),
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(out).strip()


def foreign(kernels: Path, name: str) -> Path:
    path = kernels / name / "kernel.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"argv": ["python", "-m", "x"], "display_name": name}))
    return path


def test_kernels_follow_envs_and_run_from_the_copy(studio: Studio) -> None:
    studio.image_env("py", ["python", "ipykernel", "hello"])
    studio.image_env("plain", ["python", "textpkg ==1.0"])  # no ipykernel: no kernel
    studio.ok("sync-envs")
    others = [foreign(studio.kernels, "python3"), foreign(studio.kernels, "studio-lookalike")]
    studio.ok("kernels")

    spec = json.loads((studio.kernels / "studio-py" / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (env: py)"
    assert spec["metadata"]["studio"]["prefix"] == str(studio.envs / "py")
    assert not (studio.kernels / "studio-plain").exists()
    assert kernel_prefix(studio.kernels, "studio-py") == str(studio.envs / "py")

    before = snapshot(studio.kernels)
    studio.ok("kernels")
    assert snapshot(studio.kernels) == before  # unchanged: nothing rewritten

    shutil.rmtree(studio.envs / "py")  # the user deletes the env
    result = studio.ok("kernels")
    assert not (studio.kernels / "studio-py").exists()
    assert "removed kernel studio-py" in result.stdout
    assert all(p.exists() for p in others)  # kernelspecs we did not make are never touched


def test_user_env_gets_a_kernel(studio: Studio) -> None:
    (studio.files / "environment.yml").write_text("dependencies: [python, ipykernel]\n")
    studio.ok("user-env")
    studio.ok("kernels")
    spec = json.loads((studio.kernels / "studio-studio" / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (env: studio)"


def test_pip_installed_ipykernel_is_detected(studio: Studio) -> None:
    studio.image_env("pipenv", ["python"])
    studio.ok("sync-envs")
    site = next((studio.envs / "pipenv" / "lib").glob("python*/site-packages"))
    (site / "ipykernel").mkdir()
    studio.ok("kernels")
    assert (studio.kernels / "studio-pipenv" / "kernel.json").exists()


def test_r_env_with_irkernel_gets_an_r_kernel(studio: Studio) -> None:
    env = studio.envs / "rstats"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "R").write_text("#!/bin/sh\n")
    (env / "lib" / "R" / "library" / "IRkernel").mkdir(parents=True)
    studio.ok("kernels")
    spec = json.loads((studio.kernels / "studio-rstats" / "kernel.json").read_text())
    assert spec["language"] == "R" and spec["argv"][0] == str(env / "bin" / "R")
