"""An S3/ECR-compatible server for boto3: moto in server mode, a real HTTP server on loopback.

``moto_server`` (session): the running server; ``aws`` (function): the hub-side `AwsAccess`
pointed at it, with test credentials in the environment. Names are unique per test, since the
server's state lives for the whole session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests

from studio_spawner.aws import AwsAccess, _client

from .hub_fixtures import free_ports

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class Moto:
    """The running moto server: its URL and admin-side helpers to create test data."""

    url: str

    def client(self, service: str, region: str = REGION) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def bucket(self, region: str = REGION) -> str:
        """Create a uniquely named bucket in `region`; return its name."""
        name = f"studio-{uuid.uuid4().hex[:12]}"
        self.client("s3", region).create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        return name

    def ecr_image(self, tag: str = "1.0", region: str = REGION) -> tuple[str, str]:
        """Push an image manifest to a new ECR repository; return (repository, digest)."""
        repository = f"team/studio-{uuid.uuid4().hex[:8]}"
        ecr = self.client("ecr", region)
        ecr.create_repository(repositoryName=repository)
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "size": 7023, "digest": "sha256:" + "a" * 64},
                    "layers": []}
        image = ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest),
                              imageTag=tag)["image"]
        return repository, image["imageId"]["imageDigest"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """moto[server] as a subprocess on a free loopback port."""
    port = free_ports(1)[0]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the moto server did not start")
            time.sleep(0.1)
    try:
        yield Moto(url)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def aws(moto_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccess]:
    """The hub's AWS access, with test credentials, against the moto server."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    _client.cache_clear()
    yield AwsAccess(region=REGION, endpoint_url=moto_server.url)
    _client.cache_clear()


def ecr_host(region: str = REGION) -> str:
    return f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com"

