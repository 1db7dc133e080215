"""The hub's solve against conda channels served over HTTP on this machine: a lock for a
good environment, the missing package or the conflict named for the user, unreachable channels
as a fallback, and the spawner keeping the lock with the studio."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from studio_spawner import conda_build
from studio_spawner.cli import offline_spawner
from studio_spawner.conda_solve import (
    ChannelsUnreachable,
    CondaSolveFailed,
    SolveSettings,
    solve_lock,
)
from studio_spawner.conda_spec import CondaPolicy, parse_environment
from studio_spawner.spawner import StudioStartError

from .conda_packages import build_package, index_channel, library_package, serve_directory
from .conftest import CATALOG_CONFIG


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two channels, `local` and `other`, under one alias URL."""
    root = tmp_path_factory.mktemp("channels")
    for pkg in (library_package("zlib", "1.3"), library_package("zlib", "2.0"),
                library_package("numpy", "1.26", ("zlib <2",)),
                library_package("pandas", "2.2", ("numpy >=1.26",)),
                library_package("oldtool", "1.0", ("zlib <2",)),
                library_package("newtool", "1.0", ("zlib >=2",)),
                library_package("ipykernel", "6.29")):
        build_package(root / "local", pkg)
    build_package(root / "other", library_package("samtools", "1.19", ("zlib",)))
    index_channel(root / "local")
    index_channel(root / "other")
    with serve_directory(root) as url:
        yield url + "/"


def environment(text: str, alias: str):
    env, problems = parse_environment(text, CondaPolicy(("local", "other"), alias), 65536)
    assert problems == []
    return env


def settings(alias: str, tmp_path: Path, **kw) -> SolveSettings:
    return SolveSettings(("local", "other"), alias, cache_dir=str(tmp_path / "repodata"), **kw)


async def test_a_good_environment_gives_a_lock_of_exact_urls(channels, tmp_path):
    env = environment("channels: [local]\ndependencies: [pandas, other::samtools]\n", channels)
    lock = yaml.safe_load(await solve_lock(env, settings(channels, tmp_path)))
    urls = [p["conda"] for p in lock["environments"]["default"]["packages"]["linux-64"]]
    names = {url.rsplit("/", 1)[1].rsplit("-", 2)[0] for url in urls}
    assert names == {"pandas", "numpy", "zlib", "samtools"}
    assert f"{channels}other/linux-64/samtools-1.19-0.tar.bz2" in urls
    assert any(url.endswith("zlib-1.3-0.tar.bz2") for url in urls)  # numpy needs zlib <2


async def test_a_missing_package_is_named_with_the_channels(channels, tmp_path):
    env = environment("channels: [local, other]\ndependencies: [pandas, no-such-pkg]\n", channels)
    with pytest.raises(CondaSolveFailed) as caught:
        await solve_lock(env, settings(channels, tmp_path))
    assert str(caught.value).startswith("package no-such-pkg is not in local or other")


async def test_a_conflict_is_explained(channels, tmp_path):
    env = environment("channels: [local]\ndependencies: [oldtool, newtool]\n", channels)
    with pytest.raises(CondaSolveFailed) as caught:
        await solve_lock(env, settings(channels, tmp_path))
    message = str(caught.value)
    assert message.startswith("conda cannot solve the environment")
    assert "zlib" in message and ("oldtool" in message or "newtool" in message)


async def test_unreachable_channels_are_reported_quickly(tmp_path):
    env = environment("channels: [local]\ndependencies: [numpy]\n", "http://127.0.0.1:9/")
    started = time.monotonic()
    with pytest.raises(ChannelsUnreachable) as caught:
        await solve_lock(env, settings("http://127.0.0.1:9/", tmp_path, timeout_seconds=10))
    assert time.monotonic() - started < 10
    assert "127.0.0.1:9" in str(caught.value)


async def test_the_event_loop_keeps_serving_during_a_cold_solve(channels, tmp_path):
    env = environment("channels: [local, other]\ndependencies: [pandas, samtools]\n", channels)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await solve_lock(env, settings(channels, tmp_path))
    ticker.cancel()
    assert gaps and max(gaps) < 0.25, max(gaps)


@pytest.fixture
async def spawner(channels):
    c = Config()
    for key, value in CATALOG_CONFIG.items():
        setattr(c.StudioSpawner, key, value)
    c.StudioSpawner.conda_channels = ["local", "other"]
    c.StudioSpawner.conda_channel_alias = channels
    spawner = offline_spawner(c, "alice", "rna")
    yield spawner
    await spawner.api.api_client.close()


def secret_files(spawner) -> dict[str, str]:
    data = spawner.files_secret_manifest(None)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


GOOD = "channels: [local]\ndependencies: [pandas]\nprefix: /home/ann/envs/x\n"


async def no_solve(*args, **kwargs):
    raise AssertionError("solved again")


async def test_the_spawner_solves_keeps_the_lock_and_sends_it(spawner, channels, monkeypatch):
    spawner.user_options = {"name": "s", "template": "python", "environment_yml": GOOD}
    await spawner.load_user_options()
    files = secret_files(spawner)
    assert "pandas-2.2-0.tar.bz2" in files["environment.lock"]
    assert "prefix" not in yaml.safe_load(files["environment.yml"])  # normalised for installers
    assert "# note: 'prefix' is ignored" in files["environment.yml"]
    env = {e["name"]: e["value"] for e in (await spawner.get_pod_manifest()).to_dict()["spec"][
        "containers"][0]["env"]}
    assert env["CONDA_CHANNEL_ALIAS"] == channels

    state = spawner.get_state()
    again = offline_spawner(spawner.config, "alice", "rna")
    again.load_state(state)
    monkeypatch.setattr(conda_build, "solve_lock", no_solve)  # the kept lock is used
    again.user_options = spawner.user_options
    await again.load_user_options()
    assert secret_files(again)["environment.lock"] == files["environment.lock"]
    await again.api.api_client.close()


async def test_the_spawn_fails_at_once_naming_the_field(spawner):
    spawner.user_options = {"name": "s", "template": "python",
                            "environment_yml": "channels: [local]\ndependencies: [pandsa]\n"}
    with pytest.raises(StudioStartError) as caught:
        await spawner.load_user_options()
    assert "Conda packages: package pandsa is not in local" in str(caught.value)


async def test_unreachable_channels_fall_back_to_the_pod_with_a_note(spawner):
    spawner.conda_channel_alias = "http://127.0.0.1:9/"
    spawner.user_options = {"name": "s", "template": "python",
                            "environment_yml": "channels: [local]\ndependencies: [pandas]\n"}
    await spawner.load_user_options()
    files = secret_files(spawner)
    assert "environment.lock" not in files
    assert "# note: the hub could not solve the environment" in files["environment.yml"]


async def test_the_solve_can_be_turned_off(spawner):
    spawner.conda_solve = False
    spawner.user_options = {"name": "s", "template": "python",
                            "environment_yml": "channels: [local]\ndependencies: [pandsa]\n"}
    await spawner.load_user_options()  # no solve: the pod's build will say it
    assert "environment.lock" not in secret_files(spawner)


async def test_package_cache_volume_is_mounted_and_named_for_conda(spawner):
    spawner.conda_package_cache_volume = {"persistentVolumeClaim": {"claimName": "pkgs"}}
    spawner.user_options = {"name": "s", "template": "python"}
    await spawner.load_user_options()
    pod = (await spawner.get_pod_manifest()).to_dict()["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["studio-conda-pkgs"]["persistent_volume_claim"]["claim_name"] == "pkgs"
    for container in [pod["containers"][0], *pod["init_containers"]]:
        mounts = {m["name"]: m["mount_path"] for m in container["volume_mounts"]}
        assert mounts["studio-conda-pkgs"] == "/opt/studio/pkgs"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["CONDA_PKGS_DIRS"] == "/opt/studio/pkgs"


def test_bad_virtual_packages_stop_the_hub_with_the_setting(spawner):
    from traitlets import TraitError

    with pytest.raises(TraitError) as caught:
        spawner.conda_virtual_packages = ["__glibc=not a version=0"]
    assert "StudioSpawner.conda_virtual_packages" in str(caught.value)


FORM = {"name": ["Conda"], "environment_source": ["template"], "template": ["python"]}


async def test_the_form_shows_a_missing_package_next_to_the_field(spawner):
    from studio_spawner.errors import OptionsError

    bad = "channels: [local]\ndependencies: [pandsa]\n"
    with pytest.raises(OptionsError) as caught:
        await spawner.run_options_from_form({**FORM, "environment_yml": [bad]})
    assert "package pandsa is not in local" in caught.value.by_field["environment_yml"]
    html = await spawner.get_options_form()
    assert 'data-field="environment_yml"' in html and "pandsa is not in local" in html
    assert "dependencies: [pandsa]" in html  # what the user typed is kept


async def test_a_form_solve_is_kept_for_the_start(spawner, monkeypatch):
    good = "channels: [local]\ndependencies: [pandas]\n"
    options = await spawner.run_options_from_form({**FORM, "environment_yml": [good]})
    assert options["environment_yml"] == good
    monkeypatch.setattr(conda_build, "solve_lock", no_solve)  # no second solve at the start
    spawner.user_options = options
    await spawner.load_user_options()
    assert "pandas-2.2-0.tar.bz2" in secret_files(spawner)["environment.lock"]


async def test_changed_channels_solve_again(spawner, channels):
    spawner.user_options = {"name": "s", "template": "python",
                            "environment_yml": "dependencies: [pandas]\n"}
    await spawner.load_user_options()
    assert "environment.lock" in secret_files(spawner)
    spawner.conda_channels = ["other"]  # the admin changed the channels: the kept lock is stale
    with pytest.raises(StudioStartError) as caught:
        await spawner.load_user_options()
    assert "package pandas is not in other" in str(caught.value)


async def test_a_file_without_channels_gets_the_allowed_ones(spawner):
    spawner.user_options = {"name": "s", "template": "python",
                            "environment_yml": "dependencies: [pandas]\n"}
    await spawner.load_user_options()
    sent = yaml.safe_load(secret_files(spawner)["environment.yml"])
    assert sent == {"channels": ["local", "other"], "dependencies": ["pandas", "ipykernel"]}


def test_repodata_stays_in_memory_until_its_max_age(tmp_path):
    from studio_spawner.conda_solve import gateway

    kept = gateway(str(tmp_path), 600)
    assert gateway(str(tmp_path), 600) is kept
    assert gateway(str(tmp_path), 0) is not kept  # older than 0 s: a fresh gateway


async def test_an_env_without_a_kernel_package_gets_ipykernel(spawner):
    spawner.user_options = {"name": "s", "template": "python",
                            "environment_yml": "channels: [local]\ndependencies: [pandas]\n"}
    await spawner.load_user_options()
    files = secret_files(spawner)
    assert "ipykernel-6.29-0.tar.bz2" in files["environment.lock"]
    assert yaml.safe_load(files["environment.yml"])["dependencies"] == ["pandas", "ipykernel"]
    assert "# note: ipykernel was added" in files["environment.yml"]


async def test_a_kernel_package_the_channels_lack_is_named_as_the_admins(spawner):
    spawner.conda_kernel_package = "their-kernel"
    spawner.user_options = {"name": "s", "template": "python",
                            "environment_yml": "channels: [local]\ndependencies: [pandas]\n"}
    with pytest.raises(StudioStartError) as caught:
        await spawner.load_user_options()
    assert "Conda packages: their-kernel, which is added so that the env becomes a Jupyter " \
        "kernel, is not in local" in str(caught.value)
    spawner.conda_kernel_package = ""  # the admin turns it off: the env solves as written
    await spawner.load_user_options()
    assert "their-kernel" not in secret_files(spawner)["environment.lock"]
