"""user-env: the user's environment.yml becomes an env, rebuilt only when the spec changes."""

from __future__ import annotations

from pathlib import Path

from .conftest import Studio

SPEC = "name: studio\nchannels: [local]\ndependencies:\n  - python\n  - ipykernel\n  - hello\n"


def calls(studio: Studio) -> list[str]:
    path = Path(studio.environ()["STUDIO_TEST_CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def test_builds_then_skips_unchanged_then_updates(studio: Studio) -> None:
    (studio.files / "environment.yml").write_text(SPEC)
    studio.ok("user-env")
    prefix = studio.envs / "studio"
    assert (prefix / "conda-meta").is_dir()
    assert any(p.name.startswith("hello-") for p in (prefix / "conda-meta").iterdir())
    assert calls(studio) == [f"env create -p {prefix} -f {studio.files}/environment.yml"]

    result = studio.ok("user-env")
    assert "unchanged" in result.stdout
    assert len(calls(studio)) == 1  # the installer was not run again

    (studio.files / "environment.yml").write_text(SPEC + "  - extra\n")
    studio.ok("user-env")
    assert calls(studio)[-1].startswith("env update -p ")
    assert any(p.name.startswith("extra-") for p in (prefix / "conda-meta").iterdir())


def test_env_name_comes_from_studio_user_env(studio: Studio) -> None:
    (studio.files / "environment.yml").write_text(SPEC)
    studio.ok("user-env", STUDIO_USER_ENV="analysis")
    assert (studio.envs / "analysis" / "conda-meta").is_dir()


def test_unknown_package_fails_with_the_solver_message(studio: Studio) -> None:
    (studio.files / "environment.yml").write_text(SPEC + "  - no-such-package-xyz\n")
    result = studio.run("user-env")
    assert result.returncode != 0
    assert "Building your conda environment from environment.yml failed" in result.stderr
    assert "no-such-package-xyz" in result.stderr
    assert "SolverError" in result.stderr  # the installer's own words reach the user
    assert not (studio.envs / "studio").exists()  # no half-built env left behind
    assert "no-such-package-xyz" in studio.log("user-env")

    (studio.files / "environment.yml").write_text(SPEC)
    studio.ok("user-env")  # a fixed spec builds on the next start


def test_no_environment_yml_is_a_no_op(studio: Studio) -> None:
    result = studio.ok("user-env")
    assert "nothing to build" in result.stdout
    assert not (studio.envs / "studio").exists()


def test_no_installer_in_the_image_says_so(studio: Studio) -> None:
    (studio.files / "environment.yml").write_text(SPEC)
    result = studio.run("user-env", STUDIO_INSTALLER="", PATH="/usr/bin:/bin")
    assert result.returncode != 0
    assert "no conda installer" in result.stderr
