"""Every valid options shape produces objects the real API server accepts (dryRun=All)."""

from __future__ import annotations

import urllib.error

import pytest
from traitlets.config import Config

from studio_spawner.cli import offline_spawner, render_documents

from .conftest import CATALOG_CONFIG
from .test_options import GOOD_YML

VALID = [
    {"name": "s"},
    {"name": "x" * 64, "description": "d" * 500, "template": "python", "resources": "gpu"},
    {"name": "RNA {seq}", "template": "rstudio", "private": True, "lifespan_hours": 120},
    {"name": "c", "image": "quay.io/a/b@sha256:" + "a" * 64},
    {"name": "c", "image": "localhost:5000/team/img:v1", "lifespan_hours": 1},
    {"name": "c", "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/studio:1"},
    {"name": "e", "template": "python", "environment_yml": GOOD_YML, "disk_gib": 100},
    {"name": "d", "data": [{"name": "genomes"}, {"name": "scratch", "writable": True}]},
    {"name": "l", "labels": {"a" * 63: "v" * 63, "example.com/team": "", "x.y/z": "a.b-c_d"}},
    {"name": "v", "env": {"A": "{b}", "PATH_EXTRA": "$(HOME)", "E": "", "U": "ünï"},
     "init_script": "#!/bin/sh\necho {hello}\n" * 50},
]
KINDS = {"Pod": "pods", "Secret": "secrets", "PersistentVolumeClaim": "persistentvolumeclaims"}


@pytest.mark.parametrize("options", VALID, ids=range(len(VALID)))
async def test_api_server_accepts_the_studio_objects(devcluster, options):
    config = Config()
    for key, value in CATALOG_CONFIG.items():
        setattr(config.StudioSpawner, key, value)
    config.KubeSpawner.storage_pvc_ensure = True
    spawner = offline_spawner(config, "dry-run-user", "s1")
    spawner.user_options = options
    try:
        documents = await render_documents(spawner)
    finally:
        await spawner.api.api_client.close()
    assert [d["kind"] for d in documents] == ["Pod", "Secret", "PersistentVolumeClaim"]
    for document in documents:
        document["metadata"].pop("ownerReferences", None)  # the pod does not exist
        path = f"/api/v1/namespaces/default/{KINDS[document['kind']]}?dryRun=All"
        try:
            accepted = devcluster.request("POST", path, document)
        except urllib.error.HTTPError as error:
            pytest.fail(f"{document['kind']} refused: {error.read().decode()}")
        assert accepted["metadata"]["name"] == document["metadata"]["name"]


# --- every admin limit, every kind of character: the objects stay within Kubernetes' limits --

LIMITS = {
    "defaults": {},
    "maxima": {"environment_yml_max_bytes": 256 * 1024, "init_script_max_bytes": 256 * 1024,
               "env_value_max_chars": 128 * 1024, "env_max_total_bytes": 128 * 1024,
               "env_max_count": 1000, "labels_max_count": 64},
}
CHARACTERS = {"ascii": "a", "dollar": "$", "latin": "é", "euro": "€", "emoji": "😀",
              "control": "\x01", "quote": "\""}


def fill(character: str, max_bytes: int, prefix: str = "") -> str:
    """prefix plus as many characters as fit in max_bytes (UTF-8)."""
    room = max_bytes - len(prefix.encode())
    return prefix + character * max(room // len(character.encode()), 0)


def largest_options(spawner, character: str) -> dict:
    """Options with every field at the admin's largest size, in this kind of character."""
    size = len(character.encode())
    count = spawner.env_max_count
    budget = getattr(spawner, "env_max_total_bytes", count * spawner.env_value_max_chars * size)
    per_value = min(spawner.env_value_max_chars, (budget // count - 6) // size)
    text = character if character.isprintable() else "a"  # only env values take controls
    return {
        "name": text * 64,
        "description": fill(text, 500),
        "template": "python",
        "environment_yml": fill(text, spawner.environment_yml_max_bytes,
                                "dependencies:\n  - numpy\n# "),
        "init_script": fill(text, spawner.init_script_max_bytes, "# "),
        "env": {f"V{i:05d}": character * per_value for i in range(count)},
        "labels": {f"k{i}": "v" * 63 for i in range(spawner.labels_max_count)},
        "data": [{"name": "genomes"}, {"name": "scratch", "writable": True}],
    }


@pytest.mark.parametrize("character", list(CHARACTERS.values()), ids=list(CHARACTERS))
@pytest.mark.parametrize("limits", list(LIMITS.values()), ids=list(LIMITS))
async def test_the_largest_accepted_options_give_objects_the_api_server_accepts(
        devcluster, limits, character):
    config = Config()
    for key, value in {**CATALOG_CONFIG, **limits}.items():
        setattr(config.StudioSpawner, key, value)
    config.KubeSpawner.storage_pvc_ensure = True
    spawner = offline_spawner(config, "dry-run-user", "s1")
    spawner.user_options = largest_options(spawner, character)
    try:
        documents = await render_documents(spawner)  # validates: the options are accepted
    finally:
        await spawner.api.api_client.close()
    for document in documents:
        document["metadata"].pop("ownerReferences", None)
        path = f"/api/v1/namespaces/default/{KINDS[document['kind']]}?dryRun=All"
        try:
            devcluster.request("POST", path, document)
        except urllib.error.HTTPError as error:
            pytest.fail(f"{document['kind']} refused: {error.read().decode()[:300]}")
