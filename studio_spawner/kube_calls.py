"""Kubernetes API calls with KubeSpawner's retry policy: a timeout per request, retries with
exponential backoff on timeouts, lost connections and transient answers (429, 5xx), and a total
time limit (k8s_api_request_timeout, k8s_api_request_retry_timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import ClientConnectionError
from jupyterhub.utils import exponential_backoff
from kubernetes_asyncio.client.rest import ApiException

T = TypeVar("T")
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


async def with_retries(
    call: Callable[[], Awaitable[T]], what: str, *, request_timeout: float, retry_timeout: float
) -> T:
    """Await `call()` until it succeeds or fails for good; raise TimeoutError naming `what`."""
    result: dict[str, Any] = {}

    async def attempt() -> bool:
        try:
            result["value"] = await asyncio.wait_for(call(), request_timeout)
        except (asyncio.TimeoutError, ClientConnectionError):
            return False
        except ApiException as error:
            if error.status in TRANSIENT_STATUS:
                return False
            raise
        return True

    await exponential_backoff(
        attempt, f"{what} did not succeed within {retry_timeout} seconds",
        timeout=retry_timeout,
    )
    return result["value"]
