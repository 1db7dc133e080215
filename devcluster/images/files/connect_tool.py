"""A tiny web tool for the studio-connect tests: `python connect_tool.py PORT`.

It answers by the last path segment, whatever prefix comes before it: `whoami` (what the tool
saw), `stream` (three lines, 0.3 s apart), `upload` (POST; counts and hashes a streamed body),
`ws` (a WebSocket echo); anything else says hello.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

from tornado import web, websocket


class WhoAmI(web.RequestHandler):
    def get(self) -> None:
        self.write({
            "path": self.request.path,
            "user": self.request.headers.get("X-Forwarded-User"),
            "cookie": self.request.headers.get("Cookie", ""),
            "prefix": self.request.headers.get("X-Forwarded-Prefix"),
        })


class Stream(web.RequestHandler):
    async def get(self) -> None:
        for line in range(3):
            self.write(f"line {line}\n")
            await self.flush()
            await asyncio.sleep(0.3)


@web.stream_request_body
class Upload(web.RequestHandler):
    def prepare(self) -> None:
        self.size, self.hash = 0, hashlib.sha256()

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.hash.update(chunk)

    def post(self) -> None:
        self.write({"size": self.size, "sha256": self.hash.hexdigest()})


class Echo(websocket.WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(f"echo: {message}")


class Hello(web.RequestHandler):
    def get(self) -> None:
        self.write("hello from the tool\n")


async def main(port: int) -> None:
    app = web.Application([
        (r".*/whoami", WhoAmI), (r".*/stream", Stream), (r".*/upload", Upload),
        (r".*/ws", Echo), (r".*", Hello),
    ])
    app.listen(port, "127.0.0.1", max_body_size=1 << 30)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
