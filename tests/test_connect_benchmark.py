"""The studio-connect benchmark runs and prints every ratio it promises (small sizes)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_connect_benchmark_prints_its_ratios() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "connect_proxy.py"), "--requests", "200",
         "--mb", "8"], capture_output=True, text=True, timeout=300, env=os.environ)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"added latency:\s+median -?\d+\.\d+ ms", out), out
    for line in ("download, minimal tool", "download, bare kernel forwarder (the ceiling)",
                 "upload, minimal tool", "download via configurable-http-proxy",
                 "download, python3 -m http.server", "download: studio-connect against the ceiling",
                 "upload: studio-connect against the ceiling"):
        assert re.search(re.escape(line) + r".*\d+\.\d+x", out), (line, out)
