"""A thin async client for the Hub REST API calls of the lifespan service, sharing and auth."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

log = logging.getLogger(__name__)

PAGINATION = "application/jupyterhub-pagination+json"
RETRY_CODES = frozenset({429, 500, 502, 503, 504, 599})


class HubAPIError(Exception):
    """The Hub API failed (after retries), or refused a request."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class HubClient:
    """Calls the Hub API with the service token; retries failures with exponential backoff."""

    def __init__(self, api_url: str, token: str, *, timeout: float = 20, retries: int = 4,
                 backoff: float = 0.5, backoff_max: float = 30, max_clients: int = 20,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.on_retry = on_retry
        self.http = AsyncHTTPClient(force_instance=True, max_clients=max_clients)

    def close(self) -> None:
        self.http.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      headers: dict[str, str] | None = None,
                      ok: frozenset[int] = frozenset()) -> HTTPResponse:
        """One API call, retried on connection errors, timeouts, 429 and 5xx.

        Codes in ``ok`` are returned, not raised (e.g. 404 for an already stopped server).
        """
        req_headers = {"Authorization": f"token {self.token}", **(headers or {})}
        data = None if body is None else json.dumps(body)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            req = HTTPRequest(self.api_url + path, method=method, headers=req_headers,
                              body=data, request_timeout=self.timeout, connect_timeout=self.timeout,
                              allow_nonstandard_methods=True)
            try:
                return await self.http.fetch(req)
            except HTTPClientError as e:
                if e.code in ok and e.response is not None:
                    return e.response
                error, code = f"{e.code} {e.message}", e.code
                if code not in RETRY_CODES:
                    raise HubAPIError(f"{method} {path}: {error}", code) from e
            except (OSError, asyncio.TimeoutError) as e:
                error, code = f"{type(e).__name__}: {e}", None
            if attempt == self.retries:
                raise HubAPIError(f"{method} {path}: {error} (gave up after {attempt + 1} tries)",
                                  code)
            log.warning("Hub API %s %s failed (%s); retry %d in %.1fs", method, path, error,
                        attempt + 1, delay)
            if self.on_retry:
                self.on_retry(method)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
        raise AssertionError("unreachable")

    async def get_json(self, path: str, **kw: Any) -> Any:
        return json.loads((await self.request("GET", path, **kw)).body)

    async def iter_users(self, state: str = "ready", limit: int = 200) -> AsyncIterator[dict]:
        """Every user (with servers in ``state``), page by page."""
        offset = 0
        while True:
            query = urlencode({"state": state, "offset": offset, "limit": limit})
            page = await self.get_json(f"/users?{query}", headers={"Accept": PAGINATION})
            if isinstance(page, list):  # a hub without pagination support
                for user in page:
                    yield user
                return
            for user in page["items"]:
                yield user
            nxt = (page.get("_pagination") or {}).get("next")
            if not nxt:
                return
            offset = nxt["offset"]

    async def get_user(self, name: str) -> dict | None:
        resp = await self.request("GET", f"/users/{quote(name, safe='')}", ok=frozenset({404}))
        return None if resp.code == 404 else json.loads(resp.body)

    async def stop_server(self, user: str, server: str) -> int:
        """Stop one server; 202 (stopping), 204 (stopped) and 404 (gone) all count as done."""
        path = f"/users/{quote(user, safe='')}/server"
        if server:
            path += f"s/{quote(server, safe='')}"
        resp = await self.request("DELETE", path, ok=frozenset({404}))
        return resp.code
