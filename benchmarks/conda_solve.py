"""Benchmark the hub's conda solve and the studio's build of the solved lock.

A local channel served over HTTP (threaded http.server on loopback) holds 30 packages that the
spec asks for (a dependency chain) plus distractor packages with several versions each, so the
repodata is not trivial. Measured in the same run:

- the hub's solve of the 30-package spec (studio_spawner.conda_solve.solve_lock): cold (empty
  repodata cache, new gateway), warm from the disk cache (new gateway, as after a hub restart),
  and warm in memory (the hub's long-lived gateway); ratios against cold;
- the studio's build of the lock with images/notebook/studio-conda-install: first build (empty
  package cache: download, extract, link) against a second build of the same lock into a new
  prefix with the package cache filled by the first; with the cache on the same filesystem as
  the env (hardlinks) and on another one (/dev/shm: copies, as with a shared cache volume).

Usage: python benchmarks/conda_solve.py [--packages 30] [--distractors 300] [--mb 1.0]
           [--files 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio_spawner import conda_solve  # noqa: E402
from studio_spawner.conda_spec import CondaPolicy, parse_environment  # noqa: E402
from tests.conda_packages import (  # noqa: E402
    Package,
    PkgFile,
    build_package,
    index_channel,
    serve_directory,
)

INSTALLER = ROOT / "images" / "notebook" / "studio-conda-install"


def make_channel(root: Path, count: int, distractors: int, mb: float, files: int) -> list[str]:
    """The 30 wanted packages (a chain, each with `files` files totalling `mb` MB) and
    distractors (3 versions each, tiny); returns the wanted names."""
    names = [f"lib{i:03d}" for i in range(count)]
    per_file = max(1, int(mb * 1024 * 1024 / files))
    for index, name in enumerate(names):
        content = {f"share/{name}/f{j}.bin": PkgFile(os.urandom(per_file)) for j in range(files)}
        depends = [f"{names[index - 1]} >=1"] if index else []
        build_package(root, Package(name, "1.0", content, depends=depends))
    for index in range(distractors):
        for version in ("1.0", "1.1", "2.0"):
            build_package(root, Package(f"other{index:04d}", version,
                                        {"info.txt": PkgFile(b"x\n")}))
    index_channel(root)
    return names


async def solve(env, settings) -> float:
    started = time.perf_counter()
    await conda_solve.solve_lock(env, settings)
    return time.perf_counter() - started


async def solve_twice(env, settings) -> float:
    """The second of two solves in one process: repodata in the gateway's memory."""
    await solve(env, settings)
    return await solve(env, settings)


def solve_times(env, alias: str, work: Path, repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"cold": [], "warm disk": [], "warm memory": []}
    for run in range(repeat):
        cache = work / f"repodata-{run}"
        settings = conda_solve.SolveSettings(("local",), alias, cache_dir=str(cache),
                                             timeout_seconds=120)
        conda_solve._GATEWAYS.clear()
        times["cold"].append(asyncio.run(solve(env, settings)))
        conda_solve._GATEWAYS.clear()
        times["warm disk"].append(asyncio.run(solve(env, settings)))

        times["warm memory"].append(asyncio.run(solve_twice(env, settings)))
    return times


def build(spec: Path, lock: Path, prefix: Path, pkgs: Path, alias: str) -> float:
    env = {"PATH": os.environ["PATH"], "HOME": str(pkgs.parent), "CONDA_CHANNEL_ALIAS": alias}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(INSTALLER), "env", "create", "-p", str(prefix),
                             "-f", str(spec), "--lock", str(lock), "--pkgs-dir", str(pkgs)],
                            env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"the build failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def build_times(spec: Path, lock: Path, work: Path, alias: str, repeat: int,
                cache_root: Path) -> tuple[list[float], list[float]]:
    first, second = [], []
    for run in range(repeat):
        pkgs = cache_root / f"pkgs-{run}"
        first.append(build(spec, lock, work / f"a-{run}", pkgs, alias))
        second.append(build(spec, lock, work / f"b-{run}", pkgs, alias))
        shutil.rmtree(pkgs)
        shutil.rmtree(work / f"a-{run}")
        shutil.rmtree(work / f"b-{run}")
    return first, second


def line(label: str, values: list[float], base: float | None = None) -> str:
    median = statistics.median(values)
    ratio = f"  {median / base:6.3f}x" if base else ""
    return f"  {label:<34} {median * 1000:9.1f} ms{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=30)
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--mb", type=float, default=1.0, help="payload MB per wanted package")
    parser.add_argument("--files", type=int, default=40, help="files per wanted package")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="studio-conda-bench-") as tmp:
        work = Path(tmp)
        print(f"building the channel: {args.packages} packages x {args.mb} MB "
              f"({args.files} files each) + {args.distractors} x 3 distractors...")
        names = make_channel(work / "served" / "local", args.packages, args.distractors,
                             args.mb, args.files)
        with serve_directory(work / "served") as url:
            alias = url + "/"
            text = "channels: [local]\ndependencies:\n" + "".join(f"  - {n}\n" for n in names)
            env, problems = parse_environment(text, CondaPolicy(("local",), alias), 65536)
            assert not problems, problems
            times = solve_times(env, alias, work, args.repeat)
            cold = statistics.median(times["cold"])
            print(f"hub solve of a {len(names)}-package spec (median of {args.repeat}):")
            for label, values in times.items():
                print(line(label, values, cold))

            spec, lock = work / "environment.yml", work / "environment.lock"
            spec.write_text(text)
            conda_solve._GATEWAYS.clear()
            lock.write_text(asyncio.run(conda_solve.solve_lock(
                env, conda_solve.SolveSettings(("local",), alias, cache_dir=str(work / "rd")))))
            for where, cache_root in (("same filesystem (hardlinks)", work),
                                      ("other filesystem (/dev/shm, copies)",
                                       Path(tempfile.mkdtemp(dir="/dev/shm")))):
                first, second = build_times(spec, lock, work, alias, args.repeat, cache_root)
                base = statistics.median(first)
                print(f"build of the lock, package cache on the {where}:")
                print(line("first build (empty cache)", first, base))
                print(line("second build (same lock, warm cache)", second, base))
                if cache_root != work:
                    shutil.rmtree(cache_root, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # py-rattler's runtime can crash in interpreter teardown
