"""A small JSON client for the Kubernetes API (dicts in, dicts out), with list+watch.

Credentials come from a kubeconfig through `kubernetes_asyncio`'s loader (client certs, tokens,
CA); requests go through one `aiohttp` session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{status}: {message}")


class Kube:
    """Minimal async API client. Use `await Kube.from_kubeconfig(path)`, then `await close()`."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext | bool,
                 headers: dict[str, str] | None = None):
        self.server = server.rstrip("/")
        self._ssl = ssl_context
        self._headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def from_kubeconfig(cls, path: str) -> Kube:
        cfg = k8s_client.Configuration()
        await k8s_config.load_kube_config(config_file=str(path), client_configuration=cfg)
        if cfg.verify_ssl:
            ctx: ssl.SSLContext | bool = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {}
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        return cls(cfg.host, ctx, headers)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=50),
                headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None,
                      params: dict[str, Any] | None = None,
                      content_type: str = "application/json") -> Any:
        """One API call; returns the decoded JSON answer or raises `ApiError`."""
        url = self.server + path
        if params:
            url += "?" + urlencode(params)
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, url, data=data, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=30)) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = text
            if resp.status >= 400:
                raise ApiError(resp.status, payload)
            return payload

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params or None)

    async def get_or_none(self, path: str) -> Any:
        """GET, with None for 404."""
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def post(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: Any) -> Any:
        """JSON merge patch."""
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.request("DELETE", path, body)

    async def watch(self, path: str, resource_version: str, **params: Any
                    ) -> AsyncIterator[dict]:
        """Yield watch events (`{"type", "object"}`) from `resource_version` until the server
        closes the stream. A 410 Gone arrives as an `ERROR` event."""
        query = {"watch": "1", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": "300", **params}
        url = f"{self.server}{path}?{urlencode(query)}"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=330)
        async with self.session.get(url, timeout=timeout) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, await resp.text())
            buffer = b""
            async for chunk in resp.content.iter_any():  # lines may exceed readline's limit
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)

    async def list_and_watch(self, path: str, **params: Any) -> AsyncIterator[tuple[str, dict]]:
        """List then watch forever, re-listing after 410 Gone or errors.

        Yields `("SYNC", list_answer)` after every (re)list, then `(type, object)` events.
        """
        while True:
            try:
                listing = await self.get(path, **params)
                yield "SYNC", listing
                version = listing["metadata"]["resourceVersion"]
                while True:
                    gone = False
                    async for event in self.watch(path, version, **params):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            gone = True
                            break
                        version = obj["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            yield kind, obj
                    if gone:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network trouble or API restart: list again
                log.warning("watch %s failed: %s; retrying", path, exc)
                await asyncio.sleep(1)
