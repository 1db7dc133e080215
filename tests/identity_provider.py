"""A stand-in OAuth2/OIDC identity provider on loopback, for GenericOAuthenticator logins.

No real identity provider can run here, so this one answers the three endpoints
GenericOAuthenticator calls (authorize, token, userinfo) over real HTTP. `sign_in_as` picks the
user (and the groups the provider asserts) that the next authorization is for.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse


class IdentityProvider:
    """Runs in a thread; `url` is its base URL."""

    def __init__(self) -> None:
        self.next_user: dict = {}
        self.tokens: dict[str, dict] = {}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                url = urlparse(self.path)
                if url.path == "/authorize":
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    code = secrets.token_hex(8)
                    provider.tokens[code] = dict(provider.next_user)
                    target = f"{query['redirect_uri']}?" + urlencode(
                        {"code": code, "state": query.get("state", "")})
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                elif url.path == "/userinfo":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self._json(provider.tokens.get(token), 401)
                else:
                    self._json(None, 404)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path == "/token" and form.get("code") in provider.tokens:
                    self._json({"access_token": form["code"], "token_type": "Bearer"})
                else:
                    self._json(None, 400)

            def _json(self, body: object, error: int = 200) -> None:
                data = json.dumps(body or {"error": "invalid"}).encode()
                self.send_response(200 if body else error)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign_in_as(self, name: str, groups: list[str]) -> None:
        self.next_user = {"preferred_username": name, "groups": groups}

    def close(self) -> None:
        self.server.shutdown()
