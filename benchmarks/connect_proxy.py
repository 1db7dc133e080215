"""Benchmark studio-connect: what the proxy adds in front of a web tool.

Runs, on loopback, a minimal HTTP tool (keep-alive; a tiny answer and a large body from
memory), a stub of the hub's /api/user for the one token used (studio-connect caches the
answer, as in a studio), and studio-connect between them. Then measures in the same run,
direct to the tool and through the proxy:

- latency: sequential keep-alive GETs of a tiny page (median and p95; the difference is the
  latency the proxy adds);
- throughput: downloads of a large body (MB/s; the ratio through / direct), from the minimal
  tool (memory-speed: the worst case for a proxy, which adds two copies of every byte) and from
  the seed's example tool, `python3 -m http.server`, serving a file.

Direct and proxied rounds alternate, so other load on the machine weighs on both alike.

Usage: python benchmarks/connect_proxy.py [--requests 3000] [--mb 256]
Needs Go (connect/build.sh builds the binary once, cached).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = os.urandom(1 << 20)
ROUNDS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tool(BaseHTTPRequestHandler):
    """The tool: /small answers 2 bytes, /big?mb=N streams N MiB."""

    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and a small body leave in one write
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/big"):
            mb = int(self.path.split("=")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(mb << 20))
            self.end_headers()
            for _ in range(mb):
                self.wfile.write(CHUNK)
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

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
    headers = {"Authorization": "token bench"}
    times = []
    for i in range(count + 50):
        start = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        if i >= 50:  # warm-up: connections, the token cache
            times.append(time.perf_counter() - start)
        assert response.status == 200, response.status
    connection.close()
    return times


def throughput(port: int, path: str, mb: int) -> float:
    """MB/s of one download of `mb` MiB."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", path, headers={"Authorization": "token bench"})
    response = connection.getresponse()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    start = time.perf_counter()
    total = 0
    while n := response.readinto(view):
        total += n
    elapsed = time.perf_counter() - start
    connection.close()
    assert total == mb << 20, total
    return total / 2**20 / elapsed


def compare(direct: tuple[int, str], proxied: tuple[int, str], mb: int) -> tuple[float, ...]:
    """Median MB/s direct and proxied over alternating rounds, and the median ratio."""
    direct_runs, proxied_runs = [], []
    for _ in range(ROUNDS):
        direct_runs.append(throughput(*direct, mb))
        proxied_runs.append(throughput(*proxied, mb))
    ratios = [p / d for p, d in zip(proxied_runs, direct_runs, strict=True)]
    median = statistics.median
    return median(direct_runs), median(proxied_runs), median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--mb", type=int, default=256)
    args = parser.parse_args()

    binary = subprocess.run([str(ROOT / "connect" / "build.sh")], capture_output=True,
                            text=True, check=True).stdout.strip().splitlines()[-1]
    tool_port, hub_port, proxy_port = serve(Tool), serve(HubStub), free_port()
    prefix = "/user/ann/bench/"
    env = {
        "JUPYTERHUB_API_TOKEN": "server", "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-ann-bench",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_SERVICE_PREFIX": prefix, "JUPYTERHUB_USER": "ann",
        "JUPYTERHUB_SERVER_NAME": "bench",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{proxy_port}{prefix}",
        "CONNECT_TOOL_PORT": str(tool_port), "JUPYTERHUB_ACTIVITY_INTERVAL": "0",
    }
    proxy = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(proxy_port, prefix)
        # Alternate direct and proxied rounds, so load from elsewhere on the machine weighs on
        # both alike; compare medians.
        direct: list[float] = []
        proxied: list[float] = []
        for _ in range(ROUNDS):
            direct += latencies(tool_port, "/small", args.requests // ROUNDS)
            proxied += latencies(proxy_port, f"{prefix}small", args.requests // ROUNDS)
        big = f"big?mb={args.mb}"
        memory = compare((tool_port, "/" + big), (proxy_port, prefix + big), args.mb)
    finally:
        proxy.terminate()
        proxy.wait(10)
    seed = seed_example(binary, env, args.mb)

    def ms(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if q < 100 else 0

    median_d, median_p = statistics.median(direct) * 1000, statistics.median(proxied) * 1000
    p95_d, p95_p = ms(direct, 95), ms(proxied, 95)
    print(f"requests: {args.requests} sequential keep-alive GETs; download: {args.mb} MiB")
    print(f"latency direct:  median {median_d:.3f} ms, p95 {p95_d:.3f} ms")
    print(f"latency proxied: median {median_p:.3f} ms, p95 {p95_p:.3f} ms")
    print(f"added latency:   median {median_p - median_d:.3f} ms (target <= 1 ms), "
          f"p95 {p95_p - p95_d:.3f} ms; ratio {median_p / median_d:.2f}x")
    for name, (direct_mbs, proxied_mbs, ratio) in (("minimal tool", memory),
                                                   ("python3 -m http.server", seed)):
        print(f"throughput from the {name} (medians of {ROUNDS} alternating downloads): direct "
              f"{direct_mbs:.0f} MB/s, proxied {proxied_mbs:.0f} MB/s: ratio {ratio:.2f}x "
              "(target >= 0.9x)")


def seed_example(binary: str, env: dict[str, str], mb: int) -> tuple[float, ...]:
    """Downloads of a file from `python3 -m http.server`, direct and through studio-connect."""
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "small"), "wb") as out:
            out.write(b"ok")
        with open(os.path.join(folder, "data.bin"), "wb") as out:
            for _ in range(mb):
                out.write(CHUNK)
        tool_port, proxy_port = free_port(), free_port()
        tool = subprocess.Popen([sys.executable, "-m", "http.server", str(tool_port), "--bind",
                                 "127.0.0.1", "--directory", folder],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        prefix = env["JUPYTERHUB_SERVICE_PREFIX"]
        env = {**env, "CONNECT_TOOL_PORT": str(tool_port),
               "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{proxy_port}{prefix}"}
        proxy = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(proxy_port, prefix)
            return compare((tool_port, "/data.bin"), (proxy_port, prefix + "data.bin"), mb)
        finally:
            proxy.terminate()
            tool.terminate()
            proxy.wait(10)
            tool.wait(10)


def wait_until_up(port: int, prefix: str) -> None:
    """Wait until studio-connect answers (the tool listens and the token is accepted)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            latencies(port, f"{prefix}small", 0)
            return
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    main()
