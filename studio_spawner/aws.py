"""The hub's access to AWS: boto3 clients from the hub's own credentials, called off the loop.

Credentials come from boto3's usual chain (environment, IRSA web identity, instance profile).
`endpoint_url` points every client at an S3/ECR-compatible endpoint instead of AWS.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

_CLIENT_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=15
)


class AwsCallError(Exception):
    """An AWS call failed; `code` is AWS's error code (or a botocore class name)."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class AwsAccess:
    """Where and how the hub calls AWS."""

    region: str = ""
    endpoint_url: str = ""

    def client(self, service: str, region: str = "") -> Any:
        return _client(service, region or self.region or None, self.endpoint_url or None)

    async def call(self, service: str, operation: str, region: str = "", **kwargs: Any
                   ) -> dict[str, Any]:
        """Run one boto3 operation in a thread; failures raise AwsCallError."""
        method = getattr(self.client(service, region), operation)
        try:
            return await asyncio.to_thread(method, **kwargs)
        except ClientError as error:
            details = error.response.get("Error", {})
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(details.get("Code") or status or "Error")
            raise AwsCallError(code, details.get("Message") or code, status) from error
        except NoCredentialsError as error:
            raise AwsCallError(
                "NoCredentials",
                "the hub has no AWS credentials (set them in the hub's environment or give "
                "its service account an IAM role)",
            ) from error
        except BotoCoreError as error:
            raise AwsCallError(type(error).__name__, str(error)) from error


@lru_cache(maxsize=32)
def _client(service: str, region: str | None, endpoint_url: str | None) -> Any:
    """One thread-safe client per service, region and endpoint."""
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint_url, config=_CLIENT_CONFIG
    )
