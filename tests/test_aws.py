"""S3 bucket checks, ECR image checks and pull secrets against moto in server mode."""

from __future__ import annotations

import base64
import json

import pytest

from studio_spawner.aws import AwsAccess, _client
from studio_spawner.catalog import DataRepository
from studio_spawner.data import DataUnavailable, DataVolume, check_buckets
from studio_spawner.images import (
    ImageUnavailable,
    check_image,
    ecr_registry,
    pull_secret,
    registry_credentials,
)

from .aws_fixtures import ACCOUNT, REGION, ecr_host


def volume(bucket: str, region: str = REGION, index: int = 0) -> DataVolume:
    repository = DataRepository(name=f"repo{index}", bucket=bucket, region=region)
    return DataVolume(index, repository, False, "claim")


async def test_present_buckets_pass(aws, moto_server):
    await check_buckets(aws, [volume(moto_server.bucket()), volume(moto_server.bucket(), "")])


async def test_missing_bucket_names_the_field_and_the_fix(aws, moto_server):
    present = moto_server.bucket()
    with pytest.raises(DataUnavailable) as error:
        await check_buckets(aws, [volume(present), volume("studio-missing-bucket", index=1)])
    message = str(error.value)
    assert message.startswith("data[1]: data repository 'repo1' (bucket studio-missing-bucket)")
    assert "does not exist" in message and "StudioSpawner.data_repositories" in message
    assert present not in message


async def test_bucket_in_another_region_than_the_catalogue_says(aws, moto_server):
    bucket = moto_server.bucket(region="us-west-2")
    with pytest.raises(DataUnavailable, match=r"is in region us-west-2, not eu-west-1"):
        await check_buckets(aws, [volume(bucket, region="eu-west-1")])


async def test_no_credentials_is_a_clear_error(moto_server, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _client.cache_clear()
    try:
        with pytest.raises(DataUnavailable, match="the hub has no AWS credentials"):
            await check_buckets(AwsAccess(REGION, moto_server.url), [volume("any-bucket")])
    finally:
        _client.cache_clear()


async def test_ecr_image_by_tag_and_by_digest(aws, moto_server):
    repository, digest = moto_server.ecr_image(tag="2024.1")
    await check_image(aws, ecr_registry(f"{ecr_host()}/{repository}:2024.1"))
    await check_image(aws, ecr_registry(f"{ecr_host()}/{repository}@{digest}"))


async def test_missing_ecr_repository_and_tag_fail_with_the_reason(aws, moto_server):
    repository, _ = moto_server.ecr_image(tag="1.0")
    with pytest.raises(ImageUnavailable, match=r"has no image with tag 2\.0; check the tag"):
        await check_image(aws, ecr_registry(f"{ecr_host()}/{repository}:2.0"))
    with pytest.raises(ImageUnavailable, match=r"team/nothing-here does not exist"):
        await check_image(aws, ecr_registry(f"{ecr_host()}/team/nothing-here:1.0"))
    wrong_region = ecr_registry(f"{ecr_host('us-east-1')}/{repository}:1.0")
    with pytest.raises(ImageUnavailable, match="does not exist"):
        await check_image(aws, wrong_region)


async def test_pull_secret_carries_the_ecr_token(aws, moto_server):
    repository, _ = moto_server.ecr_image()
    image = ecr_registry(f"{ecr_host()}/{repository}:1.0")
    registry, auth = await registry_credentials(aws, image)
    assert registry == ecr_host()
    secret = pull_secret("jupyter-ann-pull", registry, auth, labels={"app": "jupyterhub"})
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = config["auths"][ecr_host()]
    assert entry["username"] == "AWS"
    assert base64.b64decode(entry["auth"]).decode() == f"AWS:{entry['password']}"
    token = moto_server.client("ecr").get_authorization_token(registryIds=[ACCOUNT])
    assert entry["auth"] == token["authorizationData"][0]["authorizationToken"]


def test_only_ecr_hosts_are_ecr():
    assert ecr_registry("quay.io/jupyter/scipy-notebook:1") is None
    assert ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.io/x:1") is None
    image = ecr_registry("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/a/b@sha256:"
                         + "0" * 64)
    assert (image.account, image.region, image.repository) == (
        "123456789012", "us-gov-west-1", "a/b")
    assert image.image_id == {"imageDigest": "sha256:" + "0" * 64}
    assert ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com/x").image_id == {
        "imageTag": "latest"}


@pytest.mark.parametrize(("image", "policy", "message"), [
    (f"{ecr_host()}/team/a:1", {"ecr_allowed_accounts": ["000000000000"]},
     "Amazon ECR account 123456789012 is not allowed here; allowed accounts: 000000000000"),
    (f"{ecr_host('us-east-1')}/team/a:1", {"ecr_allowed_regions": ["eu-west-1"]},
     "Amazon ECR region us-east-1 is not allowed here; allowed regions: eu-west-1"),
    ("ghcr.io/someone/miner:1", {}, "ghcr.io/someone/miner is not in an allowed registry"),
    (f"{ecr_host()}.evil.io/team/a:1", {}, "is not in an allowed registry"),
    (f"{ecr_host()}/team/a:1", {"require_image_digest": True}, "pin the image by digest"),
])
def test_image_policy_refuses(image, policy, message):
    from studio_spawner.catalog import StudioCatalog
    from studio_spawner.errors import OptionsError
    from studio_spawner.options import parse_options

    from .conftest import CATALOG_CONFIG

    catalog = StudioCatalog(**{**CATALOG_CONFIG, **policy})
    with pytest.raises(OptionsError) as error:
        parse_options({"name": "n", "image": image}, catalog)
    assert message in error.value.by_field["image"]


def test_image_policy_accepts_allowed_and_pinned_images():
    from studio_spawner.catalog import StudioCatalog
    from studio_spawner.options import parse_options

    from .conftest import CATALOG_CONFIG

    catalog = StudioCatalog(**CATALOG_CONFIG, ecr_allowed_accounts=[ACCOUNT],
                            ecr_allowed_regions=[REGION], require_image_digest=True)
    image = f"{ecr_host()}/team/a@sha256:{'b' * 64}"
    assert parse_options({"name": "n", "image": image}, catalog).image == image


async def test_demo_buckets_pass_the_spawn_checks(monkeypatch):
    """./dev run's local S3 server holds the buckets its hub config offers."""
    from devcluster.demo import DEMO_BUCKETS, demo_s3

    with demo_s3() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        _client.cache_clear()
        access = AwsAccess("eu-west-1", env["STUDIO_DEMO_S3_ENDPOINT"])
        buckets = DEMO_BUCKETS.values()
        await check_buckets(access, [volume(b, index=i) for i, b in enumerate(buckets)])
    _client.cache_clear()
