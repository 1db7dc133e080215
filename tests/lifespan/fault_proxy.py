"""A real HTTP reverse proxy in front of the Hub API that counts requests and injects faults."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from tornado import httpclient, web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets


class FaultProxy:
    """Forwards to ``upstream``; ``fail_next`` requests get 503, ``hang_next`` never answer
    in time (they sleep ``hang_seconds``), ``answer_next`` codes are answered without
    forwarding; ``delay`` (seconds) slows every request down. ``fail_methods`` limits the
    faults to some methods. ``counts`` holds requests per (method, kind) and
    ``max_in_flight`` the most concurrent requests per method.
    """

    def __init__(self, upstream: str, ca_certs: str | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_certs = ca_certs  # for an https upstream with its own CA
        self.counts: Counter[tuple[str, str]] = Counter()
        self.fail_next = 0
        self.hang_next = 0
        self.hang_seconds = 30.0
        self.fail_methods: set[str] | None = None  # None: any method
        self.answer_next: list[int] = []
        self.delay = 0.0
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.max_in_flight.clear()

    def _take_fault(self, method: str) -> str | None:
        with self.lock:
            if self.fail_methods is not None and method not in self.fail_methods:
                return None
            if self.answer_next:
                return str(self.answer_next.pop(0))
            if self.fail_next > 0:
                self.fail_next -= 1
                return "fail"
            if self.hang_next > 0:
                self.hang_next -= 1
                return "hang"
        return None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        proxy = self
        client = httpclient.AsyncHTTPClient(max_clients=200)

        class Handler(web.RequestHandler):
            SUPPORTED_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH")

            async def _forward(self) -> None:
                method, path = self.request.method, self.request.path.rstrip("/")
                kind = ("list users" if path.endswith("/users") else
                        "stop server" if method == "DELETE" else "other")
                with proxy.lock:
                    proxy.counts[(method, kind)] += 1
                    proxy.in_flight[method] += 1
                    proxy.max_in_flight[method] = max(proxy.max_in_flight[method],
                                                      proxy.in_flight[method])
                try:
                    await self._answer(method, proxy._take_fault(method))
                finally:
                    with proxy.lock:
                        proxy.in_flight[method] -= 1

            async def _answer(self, method: str, fault: str | None) -> None:
                if fault and fault.isdigit():
                    self.set_status(int(fault))
                    return
                if proxy.delay:
                    await asyncio.sleep(proxy.delay)
                if fault == "fail":
                    self.set_status(503)
                    self.finish("injected failure")
                    return
                if fault == "hang":
                    await asyncio.sleep(proxy.hang_seconds)
                headers = {k: v for k, v in self.request.headers.get_all()
                           if k.lower() != "content-length"}  # keep Host: next-page URLs
                body = self.request.body if method in ("POST", "PUT", "PATCH") else None
                resp = await client.fetch(
                    proxy.upstream + self.request.uri, method=method, headers=headers,
                    body=body, raise_error=False, allow_nonstandard_methods=True,
                    request_timeout=120, ca_certs=proxy.ca_certs)
                self.set_status(resp.code, resp.reason)
                for k, v in resp.headers.get_all():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                         "content-encoding"):
                        self.add_header(k, v)
                if resp.body:
                    self.write(resp.body)

            get = post = delete = put = patch = _forward

        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        server = HTTPServer(web.Application([(r".*", Handler)]))
        server.add_sockets(sockets)
        self._ready.set()
        self._loop.run_forever()
