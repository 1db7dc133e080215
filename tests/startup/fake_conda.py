"""A test stand-in for ``conda``: ``env create|update -p PREFIX -f FILE`` with py-rattler.

It solves against the local test channel (``STUDIO_TEST_CHANNEL``) with the real solver, so an
unknown package fails with the solver's own message. Each call is appended to
``STUDIO_TEST_CALLS``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import rattler
import yaml


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="conda")
    parser.add_argument("group", choices=["env"])
    parser.add_argument("action", choices=["create", "update"])
    parser.add_argument("-p", "--prefix", required=True)
    parser.add_argument("-f", "--file", required=True)
    return parser.parse_args(argv)


async def build(prefix: str, specs: list[str]) -> None:
    channel = rattler.Channel(os.environ["STUDIO_TEST_CHANNEL"])
    records = await rattler.solve(
        sources=[channel], specs=specs, platforms=["linux-64", "noarch"], virtual_packages=[]
    )
    await rattler.install(
        records,
        target_prefix=prefix,
        cache_dir=Path(os.environ["STUDIO_TEST_PKGS"]),
        show_progress=False,
    )


def main(argv: list[str]) -> int:
    args = parse(argv)
    with open(os.environ["STUDIO_TEST_CALLS"], "a") as f:
        f.write(" ".join(argv) + "\n")
    spec = yaml.safe_load(Path(args.file).read_text()) or {}
    deps = [d for d in spec.get("dependencies") or [] if isinstance(d, str)]
    print(f"Solving environment for {len(deps)} spec(s)...", flush=True)
    try:
        asyncio.run(build(args.prefix, deps))
    except Exception as e:  # the solver's own message is what the user must see
        print(f"\nSolverError: {e}", file=sys.stderr)
        return 1
    print(f"done: {args.prefix}")
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # py-rattler's runtime can crash in interpreter teardown (SIGSEGV)
