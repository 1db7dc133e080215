"""The hub's solve: resolve an environment.yml against the allowed channels for the studio's
platform with py-rattler, before any pod exists, and write the result as a lock.

Repodata is cached on disk and in memory (one `rattler.Gateway` per cache directory), sharded
where the channel offers it. The solve runs on rattler's own threads, so the hub's event loop
keeps serving; it is bounded by a timeout. Outcomes: a lock (text of a rattler lock file), a
`CondaSolveFailed` the user must fix (missing package, conflict), or `ChannelsUnreachable`
(the caller falls back to building in the pod).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rattler
from rattler import (
    Channel,
    ChannelConfig,
    GenericVirtualPackage,
    LockChannel,
    LockFile,
    LockPlatform,
)
from rattler.exceptions import FetchRepoDataError, GatewayError, IoError, SolverError

from .conda_spec import CondaEnvironment

LOCK_MAX_BYTES = 512 * 1024  # the files Secret holds ≤ 1 MiB, base64 and the program included
FETCH_ERRORS = (GatewayError, FetchRepoDataError, IoError, OSError)
_GATEWAYS: dict[str, tuple[float, rattler.Gateway]] = {}


class CondaSolveFailed(Exception):
    """The environment cannot be built: the message says which package or conflict."""


class ChannelsUnreachable(Exception):
    """The channels could not be read (or the solve ran out of time): build in the pod."""


@dataclass(frozen=True)
class SolveSettings:
    """What the hub's solve needs from the admin."""

    default_channels: tuple[str, ...]
    channel_alias: str = "https://conda.anaconda.org/"
    platform: str = "linux-64"
    virtual_packages: tuple[str, ...] = ()
    cache_dir: str = ""
    timeout_seconds: float = 30.0
    repodata_max_age_seconds: float = 600.0


def gateway(cache_dir: str, max_age_seconds: float) -> rattler.Gateway:
    """One gateway per cache directory, so repodata stays in memory between solves; replaced
    after `max_age_seconds` so new packages appear (the disk cache then revalidates over HTTP)."""
    key = cache_dir or "default"
    created, kept = _GATEWAYS.get(key, (0.0, None))
    if kept is None or time.monotonic() - created > max_age_seconds:
        kept = rattler.Gateway(cache_dir=Path(cache_dir) if cache_dir else None)
        _GATEWAYS[key] = (time.monotonic(), kept)
    return kept


def resolve(
    environment: CondaEnvironment, settings: SolveSettings
) -> tuple[list[Channel], list[rattler.MatchSpec]]:
    """The channels to solve against and the specs, channel names resolved with the alias.

    Channels: the env's (else the admin's), plus those its specs name with `channel::`.
    """
    config = ChannelConfig(channel_alias=_with_slash(settings.channel_alias))
    names = [c for c in environment.channels if c != "nodefaults"]
    channels = {c.base_url: c for c in (Channel(n, config) for n in names or
                                         settings.default_channels)}
    specs = []
    for text in environment.specs:
        spec = rattler.MatchSpec(text)
        if spec.channel is not None:
            written = spec.channel.name
            channel = spec.channel if "://" in written else Channel(written, config)
            channels.setdefault(channel.base_url, channel)
            canonical = spec.to_canonical_string()
            spec = rattler.MatchSpec(canonical.replace(
                f'channel="{written}"', f'channel="{channel.base_url}"'
            ))
        specs.append(spec)
    return list(channels.values()), specs


def virtual_packages(specs: Sequence[str]) -> list[GenericVirtualPackage]:
    """`__glibc=2.35=0` strings as rattler's virtual packages."""
    packages = []
    for text in specs:
        name, version, build = (text.split("=") + ["0", "0"])[:3]
        packages.append(GenericVirtualPackage(
            rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build or "0")
        ))
    return packages


async def solve_lock(environment: CondaEnvironment, settings: SolveSettings) -> str:
    """Solve the env's conda specs; return a rattler lock file's text (pip is not solved)."""
    try:
        return await asyncio.wait_for(_solve(environment, settings), settings.timeout_seconds)
    except asyncio.TimeoutError as error:
        raise ChannelsUnreachable(
            f"the solve did not finish within {settings.timeout_seconds:g} s"
        ) from error


async def _solve(environment: CondaEnvironment, settings: SolveSettings) -> str:
    channels, specs = resolve(environment, settings)
    platforms = [settings.platform, "noarch"]
    source = gateway(settings.cache_dir, settings.repodata_max_age_seconds)
    try:
        names = [spec.name.normalized for spec in specs]
        found = await source.query(channels, platforms, names, recursive=False)
    except FETCH_ERRORS as error:
        raise ChannelsUnreachable(_first_line(error)) from error
    _check_found(environment, specs, found, channels)
    try:
        records = await rattler.solve(
            sources=channels,
            specs=specs,
            gateway=source,
            platforms=platforms,
            virtual_packages=virtual_packages(settings.virtual_packages),
        )
    except SolverError as error:
        raise CondaSolveFailed(_conflict(error)) from error
    except FETCH_ERRORS as error:
        raise ChannelsUnreachable(_first_line(error)) from error
    return _lock_text(records, settings.platform, channels)


def _check_found(environment: CondaEnvironment, specs: Sequence[rattler.MatchSpec],
                 found: Sequence[Sequence[rattler.RepoDataRecord]],
                 channels: Sequence[Channel]) -> None:
    names = {record.name.normalized for group in found for record in group}
    missing = [text for text, spec in zip(environment.specs, specs)
               if spec.name.normalized not in names and not spec.name.normalized.startswith("__")]
    where = " or ".join(_channel_label(c) for c in channels)
    if missing == [environment.kernel] != [""]:
        raise CondaSolveFailed(
            f"{environment.kernel}, which is added so that the env becomes a Jupyter kernel, is "
            f"not in {where}; name a kernel package from another allowed channel (e.g. "
            "channel::ipykernel), or ask the administrator (setting conda_kernel_package)"
        )
    missing = [text for text in missing if text != environment.kernel]
    if missing:
        listed = ", ".join(missing)
        raise CondaSolveFailed(
            f"{'package' if len(missing) == 1 else 'packages'} {listed} "
            f"{'is' if len(missing) == 1 else 'are'} not in {where}; check the name(s) "
            "(conda package names can differ from pip's) or the channels"
        )


def _channel_label(channel: Channel) -> str:
    return channel.name or channel.base_url


def _conflict(error: Exception) -> str:
    lines = [line.rstrip() for line in str(error).strip().splitlines() if line.strip()]
    detail = "\n".join(lines[:20])
    return f"conda cannot solve the environment:\n{detail}"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _lock_text(records: Sequence[rattler.RepoDataRecord], platform: str,
               channels: Sequence[Channel]) -> str:
    lock_platform = LockPlatform(platform)
    lock = LockFile([lock_platform])
    lock.set_channels("default", [LockChannel(c.base_url) for c in channels])
    for record in records:
        lock.add_conda_package("default", lock_platform, record)
    with tempfile.TemporaryDirectory(prefix="studio-lock-") as tmp:
        path = os.path.join(tmp, "environment.lock")
        lock.to_path(Path(path))
        return Path(path).read_text()
