"""StudioSpawner's collaboration settings, offline (the behaviour on a hub is in
test_collaboration.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets import TraitError
from traitlets.config import Config

from studio_spawner.cli import offline_spawner
from studio_spawner.errors import OptionsError

from .conftest import CATALOG_CONFIG


@pytest.fixture
async def make_spawner():
    made = []

    def make(**settings):
        c = Config()
        for key, value in {**CATALOG_CONFIG, **settings}.items():
            setattr(c.StudioSpawner, key, value)
        spawner = offline_spawner(c, "ann", "rna")
        made.append(spawner)
        return spawner

    yield make
    for spawner in made:
        await spawner.api.api_client.close()


async def test_share_min_role_is_at_most_launch(make_spawner):
    with pytest.raises(TraitError, match=re.escape(
            "StudioSpawner.share_min_role: 'admin' is not a role here; use one of view, "
            "connect, launch")):
        make_spawner(share_min_role="admin")


async def test_the_studio_server_caches_hub_answers_briefly_only_with_sharing(make_spawner):
    assert "--HubOAuth.cache_max_age=30" in make_spawner(workspace_sharing=True).get_args()
    assert not any("HubOAuth" in a for a in make_spawner().get_args())
    assert not any("HubOAuth" in a for a in make_spawner(
        workspace_sharing=True, server_auth_cache_seconds=None).get_args())


async def test_launch_workspaces_come_from_the_owners_groups(make_spawner):
    spawner = make_spawner(workspace_sharing=True)
    spawner.user.groups = [SimpleNamespace(name=n) for n in [
        "workspace:genomics:launch", "workspace:lab:connect", "workspace:proteomics:launch"]]
    assert spawner.workspaces() == ["genomics", "proteomics"]
    with pytest.raises(OptionsError) as failure:
        spawner.parse({"name": "x"})
    assert "choose the studio's workspace" in failure.value.by_field["workspace"]
    assert spawner.parse({"name": "x", "workspace": "proteomics"}).workspace == "proteomics"


async def test_sharing_without_a_token_names_the_setting(make_spawner):
    spawner = make_spawner(workspace_sharing=True)
    with pytest.raises(web.HTTPError, match="StudioSpawner.sharing_api_token is not set"):
        await spawner.sync_shares(False, "genomics")


def validate_example(tmp_path: Path, *groups: str) -> subprocess.CompletedProcess:
    """`studio-spawner validate` with the example hub config, offline."""
    config = Path(__file__).parents[1] / "hub_config" / "jupyterhub_config.py"
    options = tmp_path / "options.json"
    options.write_text('{"name": "x"}')
    return subprocess.run(
        [sys.executable, "-m", "studio_spawner.cli", "validate", "--config", str(config),
         str(options), "--groups", ",".join(groups)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


def test_the_cli_takes_membership_from_groups(tmp_path):
    outsider = validate_example(tmp_path)
    assert outsider.returncode == 1
    assert "workspace: you have no workspace where you may launch" in outsider.stdout
    member = validate_example(tmp_path, "workspace:demo:launch", "workspace:genomics:view")
    assert member.returncode == 0, member.stdout + member.stderr
    assert '"workspace": "demo"' in member.stdout
