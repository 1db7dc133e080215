"""Start, record and stop the devcluster's processes by PID."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


class Processes:
    """Long-running children, each logging to ``logs/<name>.log`` with its PID in ``run/``.

    PID files let ``python -m devcluster down`` stop a devcluster whose launcher died.
    """

    def __init__(self, state_dir: Path) -> None:
        self.log_dir = state_dir / "logs"
        self.run_dir = state_dir / "run"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Start ``argv`` in its own session; return its PID."""
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
                preexec_fn=_die_with_parent if _on_main_thread() else None)
        self._procs[name] = proc
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc.pid

    def pid(self, name: str) -> int | None:
        """The PID of a started process (also one recorded by an earlier launcher)."""
        if name in self._procs:
            return self._procs[name].pid
        path = self.run_dir / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        if proc is not None:
            return proc.poll() is None
        pid = self.pid(name)
        return pid is not None and _pid_alive(pid)

    def exited(self) -> dict[str, int]:
        """Started processes that have exited, with their exit codes."""
        return {n: p.returncode for n, p in self._procs.items() if p.poll() is not None}

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """SIGTERM the process (its whole session), SIGKILL after ``timeout``; forget it."""
        pid = self.pid(name)
        proc = self._procs.pop(name, None)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if pid is None or not _pid_alive(pid):
            if proc is not None:
                proc.poll()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None or proc is None and not _pid_alive(pid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()


def _on_main_thread() -> bool:
    """PR_SET_PDEATHSIG fires when the *thread* that forked exits: use it from the main one."""
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the child when the launcher dies without stopping it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True
