"""The studio-connect binary for tests (built once by connect/build.sh, cached by its sources).

``connect_binary`` (session): its path. Without Go the dependent tests skip, or fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CONNECT = Path(__file__).resolve().parent.parent / "connect"


def need_go() -> None:
    """Skip without Go (fail in CI, where .ci/run provides it)."""
    if shutil.which("go") is None:
        if os.environ.get("CI"):
            pytest.fail("Go is needed to build studio-connect")
        pytest.skip(reason="Go is not installed (CI fails here instead)")


@pytest.fixture(scope="session")
def connect_binary() -> Path:
    """The studio-connect binary from connect/build.sh."""
    need_go()
    built = subprocess.run([str(CONNECT / "build.sh")], capture_output=True, text=True,
                           timeout=600, check=True)
    return Path(built.stdout.strip().splitlines()[-1])
