"""Images on Amazon ECR: the admin's account/region policy, the existence check, pull secrets.

The pure parts (`ecr_registry`, `ecr_policy_error`, `pull_secret`) need no AWS; `check_image`
and `registry_credentials` call ECR with the hub's credentials (see aws.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .aws import AwsAccess, AwsCallError
from .validators import ECR_REGISTRY, ImageReference, parse_image


class ImageUnavailable(Exception):
    """The studio's image cannot be pulled; the message says why and what to do."""


@dataclass(frozen=True)
class EcrImage:
    """An image reference on an Amazon ECR registry."""

    account: str
    region: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def image_id(self) -> dict[str, str]:
        """The ECR `imageIds` entry: the digest when pinned, else the tag (default latest)."""
        return {"imageDigest": self.digest} if self.digest else {"imageTag": self.tag or "latest"}

    @property
    def reference(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}"
        return f"{self.registry}/{self.repository}{suffix}"


def ecr_registry(image: ImageReference | str) -> EcrImage | None:
    """The ECR parts of an image reference, or None when it is not on ECR."""
    reference = parse_image(image) if isinstance(image, str) else image
    if isinstance(reference, str):
        return None
    match = ECR_REGISTRY.fullmatch(reference.host)  # any port: the ECR policy still applies
    if not match:
        return None
    return EcrImage(match["account"], match["region"], reference.registry, reference.path,
                    reference.tag, reference.digest)


def ecr_policy_error(reference: ImageReference, accounts: Sequence[str],
                     regions: Sequence[str]) -> str | None:
    """Why the admin's ECR policy refuses this image, or None."""
    ecr = ecr_registry(reference)
    if ecr is None:
        return None
    if accounts and ecr.account not in accounts:
        return (f"Amazon ECR account {ecr.account} is not allowed here; allowed accounts: "
                f"{', '.join(accounts)}")
    if regions and ecr.region not in regions:
        return (f"Amazon ECR region {ecr.region} is not allowed here; allowed regions: "
                f"{', '.join(regions)}")
    return None


async def check_image(aws: AwsAccess, image: EcrImage) -> None:
    """Raise ImageUnavailable unless the repository and the tag or digest exist."""
    try:
        await aws.call("ecr", "describe_images", region=image.region, registryId=image.account,
                       repositoryName=image.repository, imageIds=[image.image_id])
    except AwsCallError as error:
        raise ImageUnavailable(_describe_failure(image, error)) from error


def _describe_failure(image: EcrImage, error: AwsCallError) -> str:
    if error.code == "RepositoryNotFoundException":
        return (f"the repository {image.registry}/{image.repository} does not exist; check the "
                "image name")
    if error.code == "ImageNotFoundException":
        wanted = image.digest or f"tag {image.tag or 'latest'}"
        return (f"{image.registry}/{image.repository} has no image with {wanted}; check the tag "
                "or digest")
    return f"the hub cannot look up {image.reference} on Amazon ECR ({error})"


async def registry_credentials(aws: AwsAccess, image: EcrImage) -> tuple[str, str]:
    """(registry host, base64 'AWS:password') from a 12-hour ECR authorization token."""
    try:
        response = await aws.call("ecr", "get_authorization_token", region=image.region,
                                  registryIds=[image.account])
    except AwsCallError as error:
        raise ImageUnavailable(
            f"the hub cannot get a pull token for {image.registry} ({error})"
        ) from error
    return image.registry, response["authorizationData"][0]["authorizationToken"]


def pull_secret(name: str, registry: str, auth: str, *, labels: Mapping[str, str]
                ) -> dict[str, Any]:
    """A kubernetes.io/dockerconfigjson Secret holding one registry's credentials."""
    username, _, password = base64.b64decode(auth).decode().partition(":")
    config = {"auths": {registry: {"username": username, "password": password, "auth": auth}}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "labels": dict(labels)},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }
