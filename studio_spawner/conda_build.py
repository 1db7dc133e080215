"""The spawner's conda step before the pod: solve the studio's environment.yml on the hub, keep
the lock with the studio, and hand the pod the normalised file, the lock and the package cache.

A mixin of StudioSpawner (glue only: parsing is conda_spec.py, solving conda_solve.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from traitlets import Bool, Dict, Float, List, TraitError, Unicode, validate
from traitlets.config import Configurable

from .conda_solve import (
    LOCK_MAX_BYTES,
    ChannelsUnreachable,
    CondaSolveFailed,
    SolveSettings,
    solve_lock,
    virtual_packages,
)
from .conda_spec import DEFAULT_CHANNEL_ALIAS, CondaEnvironment, parse_environment

LOCK_FILE = "environment.lock"


class CondaBuildError(Exception):
    """The environment cannot be built; the message is for the environment_yml field."""


class CondaBuild(Configurable):
    """Settings and state of the hub's conda solve and the studios' conda builds."""

    conda_solve = Bool(
        True,
        config=True,
        help="""Solve each studio's environment.yml on the hub before its pod is created, so a
        missing package or a conflict fails the spawn within seconds, and the pod installs the
        solved lock without solving. When the channels cannot be reached, the studio is built
        from environment.yml in the pod instead (and the hub logs why).""",
    )
    conda_solve_timeout_seconds = Float(
        30.0, min=1.0, config=True,
        help="Time limit of the hub's solve (repodata download included), in seconds.",
    )
    conda_platform = Unicode(
        "linux-64", config=True, help="The conda platform (subdir) of the studio images."
    )
    conda_virtual_packages = List(
        Unicode(),
        ["__unix=0=0", "__linux=5.15=0", "__glibc=2.35=0", "__archspec=1=x86_64"],
        config=True,
        help="""Virtual packages of the studio nodes and images for the hub's solve, as
        name=version=build (e.g. __cuda=12.4=0 for GPU nodes).""",
    )
    conda_repodata_cache_dir = Unicode(
        "",
        config=True,
        help="Where the hub caches channel repodata ('' = rattler's default, ~/.cache/rattler).",
    )
    conda_repodata_max_age_seconds = Float(
        600.0, min=0.0, config=True,
        help="""How long the hub keeps channel repodata in memory before it revalidates it with
        the channels (new packages appear after at most this long).""",
    )
    conda_package_cache_volume = Dict(
        {},
        config=True,
        help="""A pod volume source shared by the studios as their conda package cache, e.g.
        {"persistentVolumeClaim": {"claimName": "studio-conda-pkgs"}} (ReadWriteMany). Mounted
        at conda_package_cache_path and set as CONDA_PKGS_DIRS: a package is downloaded and
        extracted once for every studio. Studios sharing it can write to it: share one only
        between users who trust each other. {} = each build downloads its packages.""",
    )
    conda_package_cache_path = Unicode(
        "/opt/studio/pkgs", config=True, help="Where the package cache volume is mounted."
    )

    @validate("conda_virtual_packages")
    def _check_virtual_packages(self, proposal: dict) -> list[str]:
        try:
            virtual_packages(proposal["value"])
        except Exception as error:  # noqa: BLE001 (rattler's parse errors have no common base)
            raise TraitError(
                f"StudioSpawner.conda_virtual_packages: {error}; write name=version=build, "
                "e.g. __glibc=2.35=0"
            ) from error
        return proposal["value"]

    _conda_lock: tuple[str, str] | None = None  # (sha256 of the file and settings, lock text)
    conda_note: str = ""

    def conda_solve_settings(self) -> SolveSettings:
        return SolveSettings(
            default_channels=tuple(self.conda_channels),  # type: ignore[attr-defined]
            channel_alias=self.conda_channel_alias,  # type: ignore[attr-defined]
            platform=self.conda_platform,
            virtual_packages=tuple(self.conda_virtual_packages),
            cache_dir=self.conda_repodata_cache_dir,
            timeout_seconds=self.conda_solve_timeout_seconds,
            repodata_max_age_seconds=self.conda_repodata_max_age_seconds,
        )

    def conda_environment(self, text: str) -> CondaEnvironment:
        """The (already validated) environment.yml, parsed."""
        environment, _ = parse_environment(
            text, self.conda_policy(), len(text.encode()) + 1  # type: ignore[attr-defined]
        )
        return (environment or CondaEnvironment()).with_kernel(
            self.conda_kernel_package  # type: ignore[attr-defined]
        )

    async def prepare_conda(self, text: str) -> None:
        """Solve the environment.yml unless its lock is kept already; raise CondaBuildError."""
        self.conda_note = ""
        if not text.strip() or not self.conda_solve:
            self._conda_lock = None
            return
        settings = self.conda_solve_settings()
        key = (text, settings.default_channels, settings.channel_alias, settings.platform,
               settings.virtual_packages, self.conda_kernel_package)  # type: ignore[attr-defined]
        digest = hashlib.sha256(repr(key).encode()).hexdigest()
        if self._conda_lock and self._conda_lock[0] == digest:
            return  # a restart builds the same env (same file, same channels and platform)
        environment = self.conda_environment(text)
        try:
            lock = await solve_lock(environment, settings)
        except CondaSolveFailed as error:
            raise CondaBuildError(str(error)) from error
        except ChannelsUnreachable as error:
            self._conda_lock = None
            self.conda_note = (
                f"the hub could not solve the environment ({error}); it is solved while the "
                "studio starts"
            )
            self.log.warning("Conda solve for %s skipped: %s", self._log_name, error)
            return
        if len(lock.encode()) > LOCK_MAX_BYTES:
            self._conda_lock = None
            self.conda_note = "the solved lock is too large for the pod; solving in the studio"
            return
        self._conda_lock = (digest, lock)

    def conda_files(self, text: str) -> dict[str, str]:
        """The pod's environment.yml (normalised, with notes) and the lock, when there is one."""
        if not text.strip():
            return {}
        environment = self.conda_environment(text)
        rewrite = environment.rewritten or environment.notes or not environment.channels
        if not environment.channels:  # the channels the hub solved with, not the image's default
            environment = replace(environment, channels=tuple(self.conda_channels))  # type: ignore[attr-defined]
        if self.conda_note:
            environment = replace(environment, notes=(*environment.notes, self.conda_note))
            rewrite = True
        files = {"environment.yml": environment.to_yaml() if rewrite else text}
        if self._conda_lock:
            files[LOCK_FILE] = self._conda_lock[1]
        return files

    def conda_pod_env(self) -> dict[str, str]:
        """CONDA_* variables for the studio: the channel alias and the package cache."""
        env = {}
        alias = self.conda_channel_alias  # type: ignore[attr-defined]
        if alias.rstrip("/") != DEFAULT_CHANNEL_ALIAS.rstrip("/"):
            env["CONDA_CHANNEL_ALIAS"] = alias
        if self.conda_package_cache_volume:
            env["CONDA_PKGS_DIRS"] = self.conda_package_cache_path
        return env

    def conda_cache_volume(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The package cache's pod volume and mount, when the admin configured one."""
        if not self.conda_package_cache_volume:
            return None
        volume = {"name": "studio-conda-pkgs", **self.conda_package_cache_volume}
        mount = {"name": "studio-conda-pkgs", "mountPath": self.conda_package_cache_path}
        return volume, mount

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()  # type: ignore[misc]
        if self._conda_lock:
            state["studio_conda_lock"] = list(self._conda_lock)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        kept = state.get("studio_conda_lock")
        if isinstance(kept, list) and len(kept) == 2 and all(isinstance(x, str) for x in kept):
            self._conda_lock = (kept[0], kept[1])
