"""Tornado handlers: the users' page, the JSON API and the metrics endpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web

from ..hub_api import HubAPIError, HubClient
from .metrics import Metrics
from .policy import PolicyError
from .studios import Studio, StudioRules

log = logging.getLogger(__name__)

DEFAULT_SERVER = "~"  # how the default server ("" in the Hub API) is named in our URLs
TEMPLATES = Path(__file__).parent / "templates"


def server_from_path(segment: str) -> str:
    return "" if segment == DEFAULT_SERVER else segment


def server_to_path(server: str) -> str:
    return quote(server, safe="") if server else DEFAULT_SERVER


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """Shared lookups: the signed-in user, the owner asked for, and their studios."""

    @property
    def client(self) -> HubClient:
        return self.settings["lifespan_client"]

    @property
    def rules(self) -> StudioRules:
        return self.settings["lifespan_rules"]

    @property
    def metrics(self) -> Metrics:
        return self.settings["lifespan_metrics"]

    def owner_name(self) -> str:
        """The user whose studios are addressed (``?user=``); only admins may name another."""
        me = self.current_user
        owner = self.get_argument("user", "") or me["name"]
        if owner != me["name"] and not me.get("admin"):
            raise web.HTTPError(403, "only the owner or a hub admin may do this")
        return owner

    async def owner_studios(self, owner: str) -> list[Studio]:
        try:
            model = await self.client.get_user(owner)
        except HubAPIError as e:
            self.metrics.errors.labels("web").inc()
            raise web.HTTPError(502, f"the hub did not answer: {e}") from e
        if model is None:
            raise web.HTTPError(404, f"no user {owner!r}")
        return sorted(self.rules.studios(model), key=lambda s: s.server)

    async def owner_studio(self, owner: str, server: str) -> Studio:
        for studio in await self.owner_studios(owner):
            if studio.server == server:
                return studio
        raise web.HTTPError(404, f"no running server {server or '(default)'!r} for {owner!r}")

    def extend(self, studio: Studio, hours: Any) -> None:
        """Grant the extension (PolicyError if refused), count and log it."""
        self.rules.extend(studio, hours)
        self.metrics.extensions.inc()
        log.info("%s extended %s by %s h", self.current_user["name"], studio.label, hours)


class APIHandler(BaseHandler):
    """JSON in, JSON out; 403 (not a login redirect) when not signed in."""

    def prepare(self) -> None:
        if self.current_user is None:
            raise web.HTTPError(403, "sign in or send a token with access to this service")

    def write_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.write_json({"status": status_code, "message": message})

    def studio_json(self, studio: Studio) -> dict[str, Any]:
        data = studio.to_json(self.rules.hour_seconds)
        prefix = self.settings["lifespan_prefix"]
        data["url"] = url_path_join(prefix, "api/studios", server_to_path(studio.server))
        return data


class StudiosAPIHandler(APIHandler):
    async def get(self) -> None:
        studios = await self.owner_studios(self.owner_name())
        self.write_json({"studios": [self.studio_json(s) for s in studios],
                         "warning_minutes": self.settings["lifespan_warning_minutes"]})


class StudioAPIHandler(APIHandler):
    async def get(self, server: str) -> None:
        studio = await self.owner_studio(self.owner_name(), server_from_path(server))
        self.write_json(self.studio_json(studio))


class ExtendAPIHandler(APIHandler):
    async def post(self, server: str) -> None:
        owner = self.owner_name()
        try:
            hours = json.loads(self.request.body or b"{}").get("hours")
        except (ValueError, AttributeError) as e:
            raise web.HTTPError(400, 'send a JSON body like {"hours": 2}') from e
        studio = await self.owner_studio(owner, server_from_path(server))
        try:
            self.extend(studio, hours)
        except PolicyError as e:
            raise web.HTTPError(400, str(e)) from e
        studio = await self.owner_studio(owner, studio.server)
        self.write_json(self.studio_json(studio))


class PageHandler(BaseHandler):
    """The HTML page: the user's studios, time left, warnings and extend buttons."""

    @web.authenticated
    async def get(self) -> None:
        if self.settings.get("lifespan_home_url"):  # the page lives on the studio home
            self.redirect(self.settings["lifespan_home_url"])
            return
        owner = self.owner_name()
        studios = await self.owner_studios(owner)
        hs = self.rules.hour_seconds
        template = self.settings["lifespan_jinja"].get_template("studios.html")
        self.write(template.render(
            user=self.current_user, owner=owner, prefix=self.settings["lifespan_prefix"],
            studios=[(s, s.to_json(hs), server_to_path(s.server)) for s in studios],
            message=self.get_argument("message", ""), error=self.get_argument("error", ""),
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes)
            else self.xsrf_token,
            warning_minutes=self.settings["lifespan_warning_minutes"],
        ))

    @web.authenticated
    async def post(self, server: str) -> None:
        """The page's extend form (``hours`` field), then back to the page with a message."""
        owner = self.owner_name()
        studio = await self.owner_studio(owner, server_from_path(server))
        query: dict[str, str] = {"user": owner} if owner != self.current_user["name"] else {}
        try:
            hours = float(self.get_argument("hours"))
            self.extend(studio, hours)
        except (ValueError, PolicyError) as e:
            query["error"] = f"{studio.label}: {e}"
        else:
            query["message"] = f"{studio.label} extended by {hours:g} hours"
        self.redirect(self.settings["lifespan_prefix"] + "?" + urlencode(query))


class MetricsHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.settings["lifespan_metrics"].registry))


def make_app(*, prefix: str, client: HubClient, rules: StudioRules, metrics: Metrics,
             hub_auth: HubOAuth, cookie_secret: bytes, warning_minutes: float,
             home_url: str = "") -> web.Application:
    """The tornado application, every route under the service ``prefix``.

    ``home_url``: the studio home, where the page redirects (it shows and extends lifespans).
    """
    prefix = prefix.rstrip("/") + "/"
    server = r"([^/]+)"
    jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    routes = [
        (prefix, PageHandler),
        (prefix + f"extend/{server}", PageHandler),
        (prefix + "api/studios", StudiosAPIHandler),
        (prefix + f"api/studios/{server}", StudioAPIHandler),
        (prefix + f"api/studios/{server}/extend", ExtendAPIHandler),
        (prefix + "metrics", MetricsHandler),
        (prefix + "oauth_callback", HubOAuthCallbackHandler),
    ]
    return web.Application(
        routes, hub_auth=hub_auth, cookie_secret=cookie_secret, xsrf_cookies=False,
        lifespan_client=client, lifespan_rules=rules, lifespan_metrics=metrics,
        lifespan_prefix=prefix, lifespan_jinja=jinja, lifespan_warning_minutes=warning_minutes,
        lifespan_home_url=home_url,
    )
