"""Benchmark studio-connect: what the proxy adds in front of a web tool.

Runs, on loopback, a minimal HTTP tool (keep-alive; a tiny answer, a large body from memory,
and an upload sink), a stub of the hub's /api/user for the one token used (studio-connect
caches the answer, as in a studio), and studio-connect between them. Then measures in the same
run, direct to the tool and through the proxy:

- latency: sequential keep-alive GETs of a tiny page (median and p95; the difference is the
  latency the proxy adds);
- download throughput (MB/s; the ratio through / direct) from the minimal tool (memory speed:
  the worst case for any proxy) and from the seed's example tool, `python3 -m http.server`,
  serving a file;
- the ceiling: the same download through a bare TCP forwarder that moves bytes inside the
  kernel (splice, no HTTP, no login): what no user-space proxy on this machine can beat, since
  client, tool and proxy share the same cores;
- the deployed path: JupyterHub's proxy (configurable-http-proxy) to the tool, against
  configurable-http-proxy to studio-connect to the tool, which is how a browser reaches a studio;
- upload throughput of a large POST body.

Direct and proxied rounds alternate, so other load on the machine weighs on both alike.

Usage: python benchmarks/connect_proxy.py [--requests 3000] [--mb 256]
Needs Go (connect/build.sh builds the binary once, cached) and, for the deployed path,
configurable-http-proxy on PATH (./dev installs it).
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = os.urandom(1 << 20)
ROUNDS = 5
PREFIX = "/user/ann/bench/"
HEADERS = {"Authorization": "token bench"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tool(BaseHTTPRequestHandler):
    """The tool: .../big?mb=N streams N MiB, POST reads the body, anything else is 2 bytes."""

    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and a small body leave in one write
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("big?mb="):
            mb = int(name.split("=")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(mb << 20))
            self.end_headers()
            for _ in range(mb):
                self.wfile.write(CHUNK)
            return
        self.answer(b"ok")

    def do_POST(self) -> None:  # noqa: N802
        left = int(self.headers["Content-Length"])
        buffer = bytearray(1 << 20)
        while left:
            left -= self.rfile.readinto(memoryview(buffer)[:min(left, len(buffer))])
        self.answer(b"ok")

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class HubStub(BaseHTTPRequestHandler):
    """The hub's /api/user for the benchmark's token."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"name": "ann", "kind": "user",
                           "scopes": ["access:servers!server=ann/bench"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler]) -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def latencies(port: int, path: str, count: int) -> list[float]:
    """Seconds per sequential keep-alive GET."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for i in range(count + 50):
        start = time.perf_counter()
        connection.request("GET", path, headers=HEADERS)
        response = connection.getresponse()
        response.read()
        if i >= 50:  # warm-up: connections, the token cache
            times.append(time.perf_counter() - start)
        assert response.status == 200, response.status
    connection.close()
    return times


def download(port: int, path: str, mb: int) -> float:
    """MB/s of one download of `mb` MiB."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", path, headers=HEADERS)
    response = connection.getresponse()
    view = memoryview(bytearray(1 << 20))
    start = time.perf_counter()
    total = 0
    while n := response.readinto(view):
        total += n
    elapsed = time.perf_counter() - start
    connection.close()
    assert total == mb << 20, total
    return total / 2**20 / elapsed


def upload(port: int, path: str, mb: int) -> float:
    """MB/s of one POST of `mb` MiB."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    start = time.perf_counter()
    connection.putrequest("POST", path)
    for name, value in {**HEADERS, "Content-Length": str(mb << 20)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    for _ in range(mb):
        connection.send(CHUNK)
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    connection.close()
    assert response.status == 200, response.status
    return mb / elapsed


Route = tuple[int, str]


def compare(measure: Callable[[int, str, int], float], direct: Route, proxied: Route,
            mb: int) -> tuple[float, float, float]:
    """Median MB/s direct and proxied over alternating rounds, and the median ratio."""
    direct_runs, proxied_runs = [], []
    for _ in range(ROUNDS):
        direct_runs.append(measure(*direct, mb))
        proxied_runs.append(measure(*proxied, mb))
    ratios = [p / d for p, d in zip(proxied_runs, direct_runs, strict=True)]
    median = statistics.median
    return median(direct_runs), median(proxied_runs), median(ratios)


@contextmanager
def running(command: list[str], env: dict[str, str] | None = None) -> Iterator[None]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)


def connect_env(binary_port: int, tool_port: int, hub_port: int) -> dict[str, str]:
    return {
        "JUPYTERHUB_API_TOKEN": "server", "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-ann-bench",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{PREFIX}oauth_callback",
        "JUPYTERHUB_SERVICE_PREFIX": PREFIX, "JUPYTERHUB_USER": "ann",
        "JUPYTERHUB_SERVER_NAME": "bench",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{binary_port}{PREFIX}",
        "CONNECT_TOOL_PORT": str(tool_port), "JUPYTERHUB_ACTIVITY_INTERVAL": "0",
    }


def wait_until_up(port: int, path: str) -> None:
    """Wait until a GET of path answers 200 on port."""
    deadline = time.monotonic() + 15
    while True:
        try:
            latencies(port, path, 0)
            return
        except (OSError, AssertionError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def forward(listen_port: int, target_port: int) -> None:
    """A bare TCP forwarder moving bytes with splice(2) through 1 MiB pipes (the ceiling)."""
    listener = socket.create_server(("127.0.0.1", listen_port))

    def pump(source: socket.socket, sink: socket.socket) -> None:
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
        try:
            while moved := os.splice(source.fileno(), write_end, 1 << 20):
                while moved:
                    moved -= os.splice(read_end, sink.fileno(), moved)
        except OSError:
            pass
        finally:
            os.close(read_end)
            os.close(write_end)
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    while True:
        client, _ = listener.accept()
        tool = socket.create_connection(("127.0.0.1", target_port))
        threading.Thread(target=pump, args=(client, tool), daemon=True).start()
        threading.Thread(target=pump, args=(tool, client), daemon=True).start()


def configurable_http_proxy(routes: dict[str, int]) -> tuple[list[str], dict[str, str], int,
                                                             Callable[[], None]] | None:
    """A command for JupyterHub's proxy, and a function that adds routes to ports once it runs."""
    binary = shutil.which("configurable-http-proxy") or str(
        ROOT / ".venv/node/node_modules/.bin/configurable-http-proxy")
    if not os.access(binary, os.X_OK):
        return None
    port, api = free_port(), free_port()
    command = [binary, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
               "--api-port", str(api), "--log-level", "error"]
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": "bench"}

    def add_routes() -> None:
        deadline = time.monotonic() + 15
        for prefix, target in routes.items():
            body = json.dumps({"target": f"http://127.0.0.1:{target}"}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{api}/api/routes{prefix}",
                                             data=body, method="POST",
                                             headers={"Authorization": "token bench"})
            while True:
                try:
                    urllib.request.urlopen(request, timeout=5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    return command, env, port, add_routes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--forward", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward:
        forward(*args.forward)
        return

    binary = subprocess.run([str(ROOT / "connect" / "build.sh")], capture_output=True,
                            text=True, check=True).stdout.strip().splitlines()[-1]
    tool_port, hub_port, proxy_port, ceiling_port = serve(Tool), serve(HubStub), free_port(), \
        free_port()
    big = f"big?mb={args.mb}"
    direct, through = (tool_port, "/" + big), (proxy_port, PREFIX + big)
    results: dict[str, tuple[float, float, float]] = {}
    with running([binary], connect_env(proxy_port, tool_port, hub_port)), \
            running([sys.executable, __file__, "--forward", str(ceiling_port), str(tool_port)]):
        wait_until_up(proxy_port, PREFIX + "small")
        wait_until_up(ceiling_port, "/small")
        direct_times: list[float] = []
        proxied_times: list[float] = []
        for _ in range(ROUNDS):
            direct_times += latencies(tool_port, "/small", args.requests // ROUNDS)
            proxied_times += latencies(proxy_port, f"{PREFIX}small", args.requests // ROUNDS)
        results["download, minimal tool"] = compare(download, direct, through, args.mb)
        results["download, bare kernel forwarder (the ceiling)"] = compare(
            download, direct, (ceiling_port, "/" + big), args.mb)
        results["upload, minimal tool"] = compare(upload, (tool_port, "/sink"),
                                                  (proxy_port, PREFIX + "sink"), args.mb)
        results["upload, bare kernel forwarder (the ceiling)"] = compare(
            upload, (tool_port, "/sink"), (ceiling_port, "/sink"), args.mb)
        hub_proxy = configurable_http_proxy({"/tool": tool_port, PREFIX.rstrip("/"): proxy_port})
        if hub_proxy:
            command, env, port, add_routes = hub_proxy
            with running(command, env):
                add_routes()
                wait_until_up(port, "/tool/small")
                results["download via configurable-http-proxy (the deployed path)"] = compare(
                    download, (port, "/tool/" + big), (port, PREFIX + big), args.mb)
    results["download, python3 -m http.server"] = seed_example(binary, hub_port, args.mb)

    median = statistics.median
    median_d, median_p = median(direct_times) * 1000, median(proxied_times) * 1000
    p95_d = statistics.quantiles(direct_times, n=20)[-1] * 1000
    p95_p = statistics.quantiles(proxied_times, n=20)[-1] * 1000
    print(f"requests: {args.requests} sequential keep-alive GETs; bodies: {args.mb} MiB; "
          f"medians of {ROUNDS} alternating rounds")
    print(f"latency direct:  median {median_d:.3f} ms, p95 {p95_d:.3f} ms")
    print(f"latency proxied: median {median_p:.3f} ms, p95 {p95_p:.3f} ms")
    print(f"added latency:   median {median_p - median_d:.3f} ms (target <= 1 ms), "
          f"p95 {p95_p - p95_d:.3f} ms; ratio {median_p / median_d:.2f}x")
    for name, (direct_mbs, proxied_mbs, ratio) in results.items():
        print(f"{name}: direct {direct_mbs:.0f} MB/s, through {proxied_mbs:.0f} MB/s: "
              f"ratio {ratio:.2f}x")
    for way in ("download", "upload"):
        ceiling = results[f"{way}, bare kernel forwarder (the ceiling)"][2]
        print(f"{way}: studio-connect against the ceiling: "
              f"{results[f'{way}, minimal tool'][2] / ceiling:.2f}x (target >= 0.9x)")
    if not hub_proxy:
        print("deployed path not measured: configurable-http-proxy is not installed")


def seed_example(binary: str, hub_port: int, mb: int) -> tuple[float, float, float]:
    """Downloads of a file from `python3 -m http.server`, direct and through studio-connect."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "small").write_bytes(b"ok")
        with open(os.path.join(folder, "data.bin"), "wb") as out:
            for _ in range(mb):
                out.write(CHUNK)
        tool_port, proxy_port = free_port(), free_port()
        tool = [sys.executable, "-m", "http.server", str(tool_port), "--bind", "127.0.0.1",
                "--directory", folder]
        with running(tool), running([binary], connect_env(proxy_port, tool_port, hub_port)):
            wait_until_up(proxy_port, PREFIX + "small")
            return compare(download, (tool_port, "/data.bin"), (proxy_port, PREFIX + "data.bin"),
                           mb)


if __name__ == "__main__":
    main()
