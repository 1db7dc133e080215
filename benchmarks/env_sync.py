"""Benchmark the start-up program's ``sync-envs`` step on a synthetic conda env.

Builds an env of about 20,000 files and a few hundred MB (conda-meta lists every file; some carry
text or binary prefix placeholders), then measures in the same run:

- the first sync (copy + relocation + atomic rename) against ``cp -a`` of the same tree;
- an unchanged restart against ``rsync -a`` of the same tree onto an up-to-date copy (what a
  sync-every-start approach pays at best).

With ``--cold`` (root only) it also times both restarts after dropping the page cache, as on a
pod that starts on another node.

Usage: python benchmarks/env_sync.py [--files 20000] [--mb 300] [--dir /var/tmp] [--cold]
Needs ``cp`` and ``rsync`` (apt-get install -y rsync).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "studio_spawner" / "startup" / "studio_startup.sh"
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3" + "_placehold" * 20
FILES_PER_PACKAGE = 100
BIG_FILES = 100


def file_bytes(prefix: str, kind: str, size: int, seed: int) -> bytes:
    """Content of one synthetic file as conda would have installed it at ``prefix``."""
    if kind == "text":
        return (f"#!{prefix}/bin/python\n# {seed}\nPREFIX = '{prefix}'\n" + "x" * size).encode()
    if kind == "binary":
        pad = b"\0" * (len(PLACEHOLDER) - len(prefix) + 1)
        return (
            b"\x7fELF"
            + os.urandom(size // 2)
            + f"{prefix}/lib".encode()
            + pad
            + os.urandom(size // 2)
        )
    return os.urandom(size)


def make_env(prefix: Path, n_files: int, total_mb: int) -> None:
    """Write the synthetic env and its conda-meta."""
    packages = max(1, n_files // FILES_PER_PACKAGE)
    big_size = max(0, total_mb * 2**20 - n_files * 4096) // BIG_FILES
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "conda-meta" / "history").write_text("==> 2024-01-01 <==\n")
    site = prefix / "lib" / "python3.11" / "site-packages"
    counter = 0
    for p in range(packages):
        paths = []
        for i in range(FILES_PER_PACKAGE):
            kind = "text" if i == 0 else "binary" if i == 1 else "plain"
            size = big_size if p < BIG_FILES and i == 2 else 4096
            rel = f"lib/pkg{p}/{'bin' if kind == 'text' else 'data'}/f{i}"
            data = file_bytes(str(prefix), kind, size, counter)
            path = prefix / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            entry = {
                "_path": rel,
                "path_type": "hardlink",
                "size_in_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            if kind != "plain":
                entry.update(prefix_placeholder=PLACEHOLDER, file_mode=kind)
            paths.append(entry)
            counter += 1
        record = {
            "name": f"pkg{p}",
            "version": "1.0",
            "build": "0",
            "files": [e["_path"] for e in paths],
            "paths_data": {"paths_version": 1, "paths": paths},
        }
        (prefix / "conda-meta" / f"pkg{p}-1.0-0.json").write_text(json.dumps(record))
        (site / f"pkg{p}-1.0.dist-info").mkdir(parents=True)


def read_all(root: Path) -> None:
    """Warm the page cache so every measurement reads the tree from memory."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def tree_stats(root: Path) -> tuple[int, int]:
    count = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            count += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return count, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--dir", default=None, help="where to build (default: system temp)")
    parser.add_argument("--cold", action="store_true", help="also time with a dropped page cache")
    args = parser.parse_args()
    for tool in ("cp", "rsync"):
        if not shutil.which(tool):
            print(f"{tool} is needed (apt-get install -y {tool})", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="studio-bench-", dir=args.dir) as tmp:
        return run(Path(tmp), args.files, args.mb, args.cold)


def drop_caches() -> None:
    """Empty the page cache (needs root): the next reads come from disk."""
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def run(tmp: Path, n_files: int, total_mb: int, cold: bool) -> int:
    image = tmp / "image" / "opt" / "conda" / "envs"
    src = image / "bench"
    home = tmp / "home" / "jovyan"
    home.mkdir(parents=True)
    make_env(src, n_files, total_mb)
    count, size = tree_stats(src)
    read_all(src)
    env = dict(
        os.environ,
        HOME=str(home),
        STUDIO_IMAGE_ENV_DIRS=str(image),
        STUDIO_FILES=str(tmp / "files"),
        STUDIO_PYTHON_CANDIDATES=sys.executable,
    )
    step = ["sh", str(LAUNCHER), "sync-envs"]

    subprocess.run(["sync"], check=True)
    t_cp = timed(["cp", "-a", str(src), str(tmp / "cp-copy")])
    t_cp_sync = t_cp + timed(["sync"])  # our first sync flushes its copy to disk too
    t_first = timed(step, env)
    t_rsync_first = timed(["rsync", "-a", f"{src}/", str(tmp / "rsync-copy")])
    t_rsync = timed(["rsync", "-a", f"{src}/", str(tmp / "rsync-copy")])
    t_again = timed(step, env)
    assert (home / ".local" / "envs" / "bench" / ".studio-sync.json").exists()
    if cold:
        drop_caches()
        t_again_cold = timed(step, env)
        drop_caches()
        t_rsync_cold = timed(["rsync", "-a", f"{src}/", str(tmp / "rsync-copy")])

    print(
        f"synthetic env: {count} files, {size / 2**20:.0f} MiB, "
        f"{count // FILES_PER_PACKAGE * 2} files with prefix placeholders"
    )
    rows = [
        ("first sync (copy + relocate)", t_first, "cp -a", t_cp),
        ("first sync (copy + relocate)", t_first, "cp -a; sync", t_cp_sync),
        ("unchanged restart", t_again, "rsync -a (no changes)", t_rsync),
    ]
    if cold:
        rows.append(
            ("unchanged restart, cold cache", t_again_cold, "rsync -a, cold cache", t_rsync_cold)
        )
    print(f"{'case':<30} {'ours s':>9} {'baseline':<22} {'base s':>9} {'ours/base':>10}")
    for name, ours, base_name, base in rows:
        print(f"{name:<30} {ours:>9.3f} {base_name:<22} {base:>9.3f} {ours / base:>10.3f}")
    for line in (home / ".local" / "state" / "studio" / "sync-envs.log").read_text().splitlines():
        if "copied in" in line:
            print("first sync breakdown:", line.split("] ", 1)[1])
    print(
        f"(for reference: rsync -a into an empty dir took {t_rsync_first:.3f} s; the first "
        "sync flushes its copy to disk (syncfs) before its atomic rename)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
