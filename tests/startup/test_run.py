"""run: the init script runs (time-limited, logged) before the server command is exec'd; and the
sh launcher copes with an image that has no Python."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import Studio

NO_PYTHON = {"STUDIO_PYTHON_CANDIDATES": "/nonexistent/python3"}


@pytest.fixture(params=["python", "sh-only"])
def mode(request: pytest.FixtureRequest) -> dict[str, str]:
    """Every run test runs with the Python program and with the sh-only fallback."""
    return {} if request.param == "python" else NO_PYTHON


def test_init_script_runs_in_home_then_command_is_execed(studio: Studio, mode: dict) -> None:
    (studio.files / "init.sh").write_text("echo init-output\npwd > where.txt\n")
    result = studio.ok("run", "--", "sh", "-c", "echo server-started $0", "arg0", **mode)
    assert "server-started arg0" in result.stdout
    assert (studio.home / "where.txt").read_text().strip() == str(studio.home)
    assert "init-output" in (studio.state / "init.log").read_text()


def test_failing_init_script_stops_the_start_with_its_output(studio: Studio, mode: dict) -> None:
    lines = "".join(f"echo line{i}\n" for i in range(40))
    (studio.files / "init.sh").write_text(lines + "echo 'pip: broken thing' >&2\nexit 3\n")
    result = studio.run("run", "--", "echo", "server-started", **mode)
    assert result.returncode != 0
    assert "server-started" not in result.stdout
    assert "exit code 3" in result.stderr and "pip: broken thing" in result.stderr
    assert "line39" in result.stderr and "line5\n" not in result.stderr  # only the tail


def test_init_script_over_its_time_limit_is_stopped(studio: Studio, mode: dict) -> None:
    (studio.files / "init.sh").write_text("echo started-slow\nsleep 60\n")
    started = time.monotonic()
    result = studio.run("run", "--", "echo", "server-started", STUDIO_INIT_TIMEOUT="2", **mode)
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    assert "did not finish within 2 seconds" in result.stderr
    assert "started-slow" in result.stderr


def test_no_init_script_execs_directly(studio: Studio, mode: dict) -> None:
    result = studio.ok("run", "--", "echo", "server-started", **mode)
    assert result.stdout.strip().endswith("server-started")


def test_sh_launcher_without_python_skips_other_steps(studio: Studio) -> None:
    studio.image_env("py", ["python"])
    for step in ("sync-envs", "user-env", "kernels"):
        result = studio.ok(step, **NO_PYTHON)
        assert "skipped: no Python" in result.stdout
        assert "skipped" in studio.log(step)
    assert not studio.envs.exists()


def test_unknown_step_is_a_usage_error(studio: Studio) -> None:
    assert studio.run("bogus").returncode == 2
    assert studio.run("bogus", **NO_PYTHON).returncode == 2


def test_a_stop_during_the_init_script_ends_it_at_once(studio: Studio, mode: dict) -> None:
    """SIGTERM (the kubelet's stop) reaches the init script; nothing waits out the grace
    period and nothing of the script is left running."""
    import os
    import signal
    import subprocess

    marker = studio.home / "init-pid"
    (studio.files / "init.sh").write_text(f"echo $$ > {marker}\nsleep 60\necho survived\n")
    proc = subprocess.Popen(studio.argv("run", "--", "echo", "server-started"),
                            env=studio.environ(**mode), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (marker.exists() and marker.read_text().strip()):
        assert time.monotonic() < deadline, "the init script did not start"
        time.sleep(0.1)
    script_pid = int(marker.read_text())
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=20)
    assert time.monotonic() - started < 5
    assert proc.returncode != 0 and "server-started" not in output
    time.sleep(0.5)
    try:
        os.kill(script_pid, 0)
        alive = Path(f"/proc/{script_pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        alive = False
    assert not alive, "the init script was left running"
