"""Data repositories: catalogue checks, the volumes each mode gets, escalation attempts."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from studio_spawner.catalog import DataRepository, StudioCatalog
from studio_spawner.data import (
    MOUNTPOINT_DRIVER,
    MountpointSettings,
    mountpoint_manifests,
    plan_volumes,
)
from studio_spawner.errors import OptionsError
from studio_spawner.options import DataMount, StudioOptions, parse_options

from .test_pod import render

RO = DataRepository(name="genomes", bucket="genomes-bucket", prefix="refs/hg38/",
                    region="eu-west-1")
RW = DataRepository(name="scratch", bucket="scratch-bucket", writable=True)
SETTINGS = MountpointSettings(namespace="studios", uid=1000, gid=100)


@pytest.mark.parametrize(("entry", "message"), [
    ({"bucket": "Genomes_Bucket"}, "data_repositories[0].bucket: a bucket name is 3-63"),
    ({"bucket": "192.168.1.1"}, "bucket: a bucket name cannot contain '..'"),
    ({"bucket": "ab"}, "bucket: a bucket name is 3-63"),
    ({"prefix": "/abs/"}, "prefix: a prefix is one or more path parts"),
    ({"prefix": "a/../b/"}, "prefix:"),
    ({"prefix": "no-slash"}, "prefix:"),
    ({"region": "Europe"}, "region: an AWS region looks like eu-west-1"),
    ({"claim": "Bad Claim"}, "claim: a claim name is a lowercase DNS subdomain"),
    ({"writable_claim": "rw"}, "writable_claim: set writable: True too"),
    ({"name": "../etc"}, "ids and names are lowercase letters"),
    ({"name": "a" * 59}, "name: at most 58 characters"),
    ({"mount_path": "/etc"}, "unknown keys ['mount_path']"),
])
def test_catalogue_refuses_bad_repositories(entry, message):
    with pytest.raises(TraitError, match=None) as error:
        StudioCatalog(data_repositories=[{"name": "x", "bucket": "good-bucket", **entry}])
    assert message in str(error.value)
    assert str(error.value).startswith("StudioSpawner.data_repositories")


def test_admin_claims_by_name_and_default_names():
    admin = DataRepository(name="s", bucket="b-b-b", writable=True, claim="s-ro",
                           writable_claim="s-rw")
    options = StudioOptions(name="n", image="i", data=(DataMount("genomes"),
                                                       DataMount("s", writable=True)))
    planned = plan_volumes(options, {"genomes": RO, "s": admin}, None)
    assert [(v.claim, v.writable, v.manifests) for v in planned] == [
        ("studio-data-genomes-ro", False, ()), ("s-rw", True, ())]


def test_write_access_needs_the_catalogue_whatever_the_options_say():
    forged = StudioOptions(name="n", image="i", data=(DataMount("genomes", writable=True),))
    for mountpoint in (None, SETTINGS):
        (volume,) = plan_volumes(forged, {"genomes": RO}, mountpoint)
        assert volume.writable is False
        for manifest in volume.manifests:
            assert "ReadWriteMany" not in manifest["spec"]["accessModes"]


def test_read_only_mountpoint_volume():
    pv, pvc = mountpoint_manifests(RO, False, SETTINGS)
    spec = pv["spec"]
    assert spec["csi"]["driver"] == MOUNTPOINT_DRIVER
    assert spec["csi"]["volumeAttributes"] == {"bucketName": "genomes-bucket"}
    assert spec["csi"]["readOnly"] is True
    assert spec["csi"]["volumeHandle"] == pv["metadata"]["name"]
    assert spec["accessModes"] == ["ReadOnlyMany"] == pvc["spec"]["accessModes"]
    assert spec["mountOptions"] == ["region eu-west-1", "prefix refs/hg38/", "uid=1000",
                                    "gid=100", "allow-other", "read-only"]
    assert spec["claimRef"] == {"namespace": "studios", "name": pvc["metadata"]["name"]}
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == "" == spec["storageClassName"]
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"


def test_writable_mountpoint_volume_may_delete_and_overwrite():
    pv, pvc = mountpoint_manifests(RW, True, SETTINGS)
    options = pv["spec"]["mountOptions"]
    assert "read-only" not in options
    assert options[-2:] == ["allow-delete", "allow-overwrite"]
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["csi"]["readOnly"] is False
    assert pvc["metadata"]["name"].startswith("studio-data-scratch-rw-")


def test_names_follow_the_content_so_changes_get_new_volumes():
    pv, pvc = mountpoint_manifests(RO, False, SETTINGS)
    assert mountpoint_manifests(RO, False, SETTINGS) == (pv, pvc), "deterministic"
    moved = DataRepository(name="genomes", bucket="other-bucket", region="eu-west-1")
    other_pv, other_pvc = mountpoint_manifests(moved, False, SETTINGS)
    assert other_pv["metadata"]["name"] != pv["metadata"]["name"]
    assert other_pvc["metadata"]["name"] != pvc["metadata"]["name"]
    elsewhere = mountpoint_manifests(RO, False, MountpointSettings(namespace="other"))[0]
    assert elsewhere["metadata"]["name"] != pv["metadata"]["name"], "PVs are cluster-wide"


@pytest.mark.parametrize(("data", "field", "message"), [
    ([{"name": "genomes", "writable": True}], "data[0].writable", "'genomes' is read-only"),
    ([{"name": "../genomes"}], "data[0].name", "unknown data repository"),
    ([{"name": "genomes/../../etc"}], "data[0].name", "unknown data repository"),
    ([{"name": "genomes", "mountPath": "/etc"}], "data[0]", "must be an object with 'name'"),
    ([{"name": "genomes", "writable": "true"}], "data[0].writable", "must be true or false"),
    ([{"name": "unknown-bucket"}], "data[0].name", "choose one of: genomes, scratch"),
    ({"genomes": True}, "data", "must be a list"),
])
def test_api_bodies_cannot_escalate(catalog, data, field, message):
    with pytest.raises(OptionsError) as error:
        parse_options({"name": "n", "template": "python", "data": data}, catalog)
    assert message in error.value.by_field[field]


async def test_every_data_mount_is_under_workspace_data_and_read_only_unless_allowed():
    options = {"name": "n", "template": "python",
               "data": [{"name": "genomes"}, {"name": "scratch", "writable": True}]}
    rendered = await render(options, data_provisioning="mountpoint")
    pod = rendered["pod"]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]
              if m["name"].startswith("data-")}
    assert set(mounts) == {"/workspace/data/genomes", "/workspace/data/scratch"}
    assert mounts["/workspace/data/genomes"]["readOnly"] is True
    assert mounts["/workspace/data/scratch"]["readOnly"] is False
    kinds = [d["kind"] for d in rendered["rest"]]
    assert kinds.count("PersistentVolume") == 2 and kinds.count("PersistentVolumeClaim") == 2


@pytest.mark.parametrize("option", ["read-only", "allow-delete", "prefix x/", "uid=0",
                                    "cache /tmp\n--allow-root", "allow-other"])
def test_admin_mount_options_cannot_override_ours(option):
    from studio_spawner.spawner import StudioSpawner

    with pytest.raises(TraitError, match=r"data_mount_options\[0\]"):
        StudioSpawner(data_mount_options=[option], _mock=True)
