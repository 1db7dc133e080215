"""Benchmark: worst-case validation time of each option field at the admin's largest sizes.

For every field, a few hostile values (as large as the admin's maximum settings allow, in
the costliest characters) are validated with ``parse_options``; the baseline, measured in the
same run, is ``json.loads`` of the same request body (what the hub does with it anyway). The
goal is at most 50 ms per field. A case that takes longer than ``--budget`` seconds is run once
and reported as such (the hub checks an environment.yml in a child process with a time limit,
so such a file is refused, not waited for).

Usage: python benchmarks/validation_worst_case.py [--repeat 5] [--budget 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio_spawner.catalog import StudioCatalog  # noqa: E402
from studio_spawner.errors import OptionsError  # noqa: E402
from studio_spawner.options import parse_options  # noqa: E402

GOAL_MS = 50.0
MAXIMA = {"environment_yml_max_bytes": 256 * 1024, "init_script_max_bytes": 256 * 1024,
          "env_value_max_chars": 128 * 1024, "env_max_total_bytes": 128 * 1024,
          "env_max_count": 1000, "labels_max_count": 64}


def catalog() -> StudioCatalog:
    """The admin's largest settings (those this version accepts)."""
    settings = {k: v for k, v in MAXIMA.items() if StudioCatalog.class_traits().get(k)}
    return StudioCatalog(
        templates=[{"id": "python", "display_name": "Python", "image": "quay.io/a/b:1"}],
        data_repositories=[{"name": f"r{i}", "bucket": f"bucket-{i:03d}"} for i in range(50)],
        **settings,
    )


def cases(c: StudioCatalog) -> dict[str, dict[str, Callable[[], Any]]]:
    """field -> case name -> a function giving the value (built lazily: some are large)."""
    yml = c.environment_yml_max_bytes
    script = c.init_script_max_bytes
    env_total = getattr(c, "env_max_total_bytes", 128 * 1024)
    per = min(c.env_value_max_chars, env_total // c.env_max_count - 8)
    return {
        "name": {"64 emoji": lambda: "😀" * 64, "1 MB": lambda: "n" * 2**20},
        "description": {"500 bytes, newlines": lambda: "é\n" * 166,
                        "1 MB": lambda: "d" * 2**20},
        "image": {
            "long path": lambda: "quay.io/" + "/".join(["a-b"] * 80) + ":t",
            "dots": lambda: "a." * 120 + "a/x",
            "100 KB": lambda: "a" * 100_000 + "!",
        },
        "environment_yml": {
            "many deps": lambda: "dependencies:\n" + "  - numpy>=1.26,<2\n" * (yml // 20),
            "one long spec": lambda: "dependencies:\n  - " + "a" * (yml - 24) + "$\n",
            "deep nesting": lambda: "[" * (yml // 2) + "]" * (yml // 2),
            "long pip line": lambda: "dependencies:\n  - pip:\n    - " + "a" * (yml - 40) + "\n",
        },
        "env": {
            "max count and bytes": lambda: {f"V{i:04d}": "€" * (per // 3)
                                            for i in range(c.env_max_count)},
            "bad names": lambda: {f"{i}bad": "x" for i in range(c.env_max_count)},
        },
        "labels": {"max count": lambda: {f"k{i}.example.com/n{i}": "v" * 63
                                         for i in range(c.labels_max_count)}},
        "data": {"100,000 entries": lambda: [{"name": "r1"}] * 100_000},
        "init_script": {"max bytes": lambda: "# " + "é" * (script // 2 - 2),
                        "control characters at the end": lambda: "x" * (script - 1) + "\x01"},
        "unknown keys": {"100,000 keys": lambda: None},
    }


def body_for(field: str, value: Any) -> dict[str, Any]:
    if field == "unknown keys":
        return {"name": "s", "template": "python", **{f"k{i}": 1 for i in range(100_000)}}
    base = {"name": "s", "template": "python"}
    if field == "image":
        base.pop("template")
    return {**base, field: value}


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000


def validate(c: StudioCatalog, body: dict[str, Any]) -> None:
    with contextlib.suppress(OptionsError):
        parse_options(body, c)


def measure(c: StudioCatalog, body: dict[str, Any], repeat: int, budget: float) -> float | None:
    """Median milliseconds of `repeat` validations, in a child process killed after `budget`
    seconds (a backtracking regex cannot be interrupted otherwise); None when it was killed."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        send.send(statistics.median(timed(lambda: validate(c, body)) for _ in range(repeat)))

    process = context.Process(target=child)
    process.start()
    ready = receive.poll(budget * repeat)
    result = receive.recv() if ready else None
    process.kill()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per case")
    args = parser.parse_args()
    c = catalog()
    print(f"{'field':<16} {'case':<32} {'body KB':>8} {'validate ms':>12} "
          f"{'json.loads ms':>14} {'ratio':>7}  goal")
    worst: dict[str, float] = {}
    for field, field_cases in cases(c).items():
        for name, make in field_cases.items():
            body = body_for(field, make())
            text = json.dumps(body)
            found = measure(c, body, args.repeat, args.budget)
            ms = found if found is not None else args.budget * 1000
            base = statistics.median(timed(lambda text=text: json.loads(text))
                                     for _ in range(args.repeat))
            worst[field] = max(worst.get(field, 0.0), ms)
            flag = "ok" if ms <= GOAL_MS else "OVER"
            shown = f"{ms:>12.1f}" if found is not None else f"{'>' + str(int(ms)):>12}"
            print(f"{field:<16} {name:<32} {len(text) / 1024:>8.0f} {shown} "
                  f"{base:>14.2f} {ms / max(base, 1e-3):>7.1f}  {flag}", flush=True)
    print("\nworst case per field (ms; a killed case counts as its budget): "
          + ", ".join(f"{f} {ms:.1f}" for f, ms in worst.items()))


if __name__ == "__main__":
    main()
