"""The lifespan service as a traitlets Application: configuration, web server, sweep loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import Application

from ..hub_api import HubAPIError, HubClient
from . import POLICY_PATH
from . import policy as p
from .metrics import Metrics
from .store import ExtensionStore
from .studios import StudioRules, utcnow
from .sweeper import Sweeper
from .web import make_app

Hours = Float(allow_none=True)


def apply_policy_document(rules: StudioRules, document: dict[str, Any]) -> None:
    """Use the policy the hub serves (``home.handlers.policy_document``) in ``rules``."""
    base = p.Policy(**document["policy"])
    groups = {g: p.group_policy(base, o, g) for g, o in document["group_policies"].items()}
    hour = float(document["hour_seconds"])
    rules.base, rules.group_policies, rules.hour_seconds = base, groups, hour
    rules.warning_seconds = float(document["warning_minutes"]) / 60 * hour


class LifespanService(Application):
    """Stops studios when their lifespan is up; lets users see and extend it."""

    name = "studio-lifespan"
    description = __doc__
    config_file = Unicode("lifespan_config.py", config=True,
                          help="Config file to load (Python, traitlets `c.LifespanService.*`).")
    generate_config = Bool(False, config=True, help="Print a default config file and exit.")

    api_url = Unicode(config=True, help="Hub API URL (default: $JUPYTERHUB_API_URL).")
    api_token = Unicode(config=True, help="Service token (default: $JUPYTERHUB_API_TOKEN).")
    service_prefix = Unicode(config=True,
                             help="URL prefix of the service (default: $JUPYTERHUB_SERVICE_PREFIX "
                                  "or /services/lifespan/).")
    bind_url = Unicode(config=True, help="Where to listen (default: $JUPYTERHUB_SERVICE_URL "
                                         "or http://127.0.0.1:10101).")
    serve = Bool(True, config=True, help="Serve the page, JSON API and metrics.")

    interval = Float(300, config=True, help="Seconds between sweeps.")
    once = Bool(False, config=True, help="Run one sweep and exit (no web server).")
    dry_run = Bool(False, config=True, help="Log what would be stopped; stop nothing.")
    concurrency = Integer(10, min=1, config=True, help="Servers stopped at the same time.")
    page_limit = Integer(200, min=1, config=True, help="Users per Hub API page.")
    api_timeout = Float(20, config=True, help="Seconds before a Hub API request times out.")
    api_retries = Integer(4, min=0, config=True, help="Retries of a failed Hub API request.")
    api_backoff = Float(0.5, config=True,
                        help="First retry delay in seconds; doubles per retry (max 30 s).")

    hour_seconds = Float(3600, config=True,
                         help="Seconds in a lifespan hour. Only tests and demos change it; every "
                              "lifespan setting (hours) and warning_minutes scale with it.")
    warning_minutes = Float(30, config=True,
                            help="Warn this many minutes before a studio stops.")
    default_hours = Float(8, config=True,
                          help="Lifespan of servers whose options have no lifespan_hours.")
    min_hours = Float(1, config=True, help="Shortest lifespan honoured.")
    max_hours = Float(120, allow_none=True, config=True,
                      help="Longest total lifespan (with extensions) of a limited studio; "
                           "None for no cap.")
    allow_keep_running = Bool(False, config=True,
                              help="Honour 'keep running' (lifespan_hours null). If false such "
                                   "studios get max_hours (or default_hours).")
    absolute_max_hours = Float(None, allow_none=True, config=True,
                               help="No studio, not even 'keep running', runs longer than this.")
    group_policies = Dict(config=True,
                          help="Per-group overrides, e.g. {'gpu-users': {'max_hours': 24, "
                               "'allow_keep_running': True}}. Keys: default_hours, max_hours, "
                               "allow_keep_running, absolute_max_hours. A user in several groups "
                               "gets the most generous value of each key.")
    policy_from_hub = Bool(
        False, config=True,
        help="""Take the lifespan policy from the hub at every sweep: c.StudioSpawner.lifespan_*
        (and lifespan_group_policies, lifespan_hour_seconds, lifespan_warning_minutes), served
        by the studio home at /hub/api/studios/lifespan-policy. The service's own
        default_hours, min_hours, max_hours, allow_keep_running, absolute_max_hours,
        group_policies, hour_seconds and warning_minutes are then unused. Until the first
        answer, nothing is stopped.""")
    data_dir = Unicode(config=True,
                       help="Directory for extensions.json and the cookie secret "
                            "(default: ./lifespan-data).")

    _policy_loaded = False
    #: The clock (aware UTC datetimes); in-process users (tests) may replace it.
    clock: Callable[[], datetime] = staticmethod(utcnow)

    aliases = {
        "config": "LifespanService.config_file",
        "api-url": "LifespanService.api_url",
        "bind-url": "LifespanService.bind_url",
        "interval": "LifespanService.interval",
        "hour-seconds": "LifespanService.hour_seconds",
        "warning-minutes": "LifespanService.warning_minutes",
        "default-hours": "LifespanService.default_hours",
        "max-hours": "LifespanService.max_hours",
        "absolute-max-hours": "LifespanService.absolute_max_hours",
        "concurrency": "LifespanService.concurrency",
        "page-limit": "LifespanService.page_limit",
        "data-dir": "LifespanService.data_dir",
        "log-level": "Application.log_level",
    }
    flags = {
        "once": ({"LifespanService": {"once": True}}, "Run one sweep and exit."),
        "dry-run": ({"LifespanService": {"dry_run": True}}, "Stop nothing, log only."),
        "allow-keep-running": ({"LifespanService": {"allow_keep_running": True}},
                               "Honour 'keep running'."),
        "policy-from-hub": ({"LifespanService": {"policy_from_hub": True}},
                            "Take the lifespan policy from the hub (c.StudioSpawner.lifespan_*)."),
        "generate-config": ({"LifespanService": {"generate_config": True}},
                            "Print a default config file and exit."),
    }

    @default("api_url")
    def _api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    @default("api_token")
    def _api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @default("service_prefix")
    def _service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/lifespan/")

    @default("bind_url")
    def _bind_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    @default("data_dir")
    def _data_dir(self) -> str:
        return os.path.abspath("lifespan-data")

    @validate("group_policies")
    def _check_groups(self, proposal: Any) -> dict:
        for group, overrides in proposal.value.items():
            p.group_policy(p.Policy(), overrides, group)  # raises naming the bad group/key
        return proposal.value

    # -- building blocks ---------------------------------------------------------------------

    def base_policy(self) -> p.Policy:
        return p.Policy(default_hours=self.default_hours, min_hours=self.min_hours,
                        max_hours=self.max_hours, allow_keep_running=self.allow_keep_running,
                        absolute_max_hours=self.absolute_max_hours)

    def build(self) -> None:
        """Create client, store, rules, metrics and sweeper from the configuration."""
        if not self.api_token:
            self.exit_with("no Hub API token: set JUPYTERHUB_API_TOKEN or "
                           "LifespanService.api_token")
        base = self.base_policy()
        groups = {g: p.group_policy(base, o, g) for g, o in self.group_policies.items()}
        self.metrics = Metrics()
        self.client = HubClient(self.api_url, self.api_token, timeout=self.api_timeout,
                                retries=self.api_retries, backoff=self.api_backoff,
                                max_clients=max(self.concurrency, 10),
                                on_retry=lambda m: self.metrics.retries.labels(m).inc())
        self.store = ExtensionStore(Path(self.data_dir) / "extensions.json")
        self.rules = StudioRules(base, groups, self.store, hour_seconds=self.hour_seconds,
                                 warning_seconds=self.warning_minutes / 60 * self.hour_seconds,
                                 clock=self.clock)
        self.sweeper = Sweeper(self.client, self.rules, self.metrics, concurrency=self.concurrency,
                               page_limit=self.page_limit, dry_run=self.dry_run)

    def home_url(self) -> str:
        """The studio home's path (beside the hub's API) when the policy comes from it."""
        if not self.policy_from_hub:
            return ""
        return urlparse(self.api_url).path.rstrip("/").removesuffix("/api") + "/studios"

    def exit_with(self, message: str) -> None:
        self.log.critical(message)
        self.exit(1)

    def cookie_secret(self) -> bytes:
        """A secret kept in the data dir, so sign-ins survive a restart of the service."""
        path = Path(self.data_dir) / "cookie_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return bytes.fromhex(path.read_text().strip())

    # -- running -----------------------------------------------------------------------------

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.generate_config:
            print(self.generate_config_file())
            self.exit(0)
        if self.config_file and os.path.exists(self.config_file):
            self.load_config_file(self.config_file)
            self.update_config(self.cli_config)  # the command line wins over the file
        logging.getLogger("studio_spawner").setLevel(self.log_level)
        for h in self.log.handlers:
            logging.getLogger("studio_spawner").addHandler(h)
        self.build()

    async def refresh_policy(self) -> bool:
        """Load the hub's policy (with ``policy_from_hub``); False while there is none yet."""
        if not self.policy_from_hub:
            return True
        try:
            document = await self.client.get_json(POLICY_PATH)
            apply_policy_document(self.rules, document)
        except (HubAPIError, KeyError, TypeError, ValueError) as error:
            self.metrics.errors.labels("policy").inc()
            if not self._policy_loaded:
                self.log.error("No lifespan policy from the hub yet (%s); stopping nothing "
                               "until it answers", error)
                return False
            self.log.warning("Keeping the last lifespan policy: the hub did not answer (%s)",
                             error)
            return True
        self._policy_loaded = True
        return True

    async def sweep_forever(self) -> None:
        while True:
            try:
                if await self.refresh_policy():
                    await self.sweeper.sweep()
            except Exception:
                self.metrics.errors.labels("sweep").inc()
                self.log.exception("Sweep failed; next try in %.0fs", self.interval)
            await asyncio.sleep(self.interval)

    async def run(self) -> None:
        if self.once:
            if not await self.refresh_policy():
                self.exit(1)
            result = await self.sweeper.sweep()
            self.client.close()
            if result.failed:
                self.exit(1)
            return
        if self.serve:
            url = urlparse(self.bind_url)
            app = make_app(prefix=self.service_prefix, client=self.client, rules=self.rules,
                           metrics=self.metrics, hub_auth=HubOAuth(api_token=self.api_token,
                                                                   api_url=self.api_url,
                                                                   cache_max_age=60),
                           cookie_secret=self.cookie_secret(),
                           warning_minutes=self.warning_minutes, home_url=self.home_url())
            app.listen(url.port or 80, url.hostname or "")
            self.log.info("Serving %s on %s", self.service_prefix, self.bind_url)
        self.log.info("Sweeping every %gs (hour = %gs, warning %g min, base policy %s, "
                      "groups %s)", self.interval, self.hour_seconds, self.warning_minutes,
                      self.base_policy(), sorted(self.group_policies))
        await self.sweep_forever()

    def start(self) -> None:
        asyncio.run(self.run_until_signalled())

    async def run_until_signalled(self) -> None:
        """`run`, ended quietly by SIGINT (Ctrl-C of the hub's terminal) or SIGTERM (the hub
        stopping its services)."""
        loop = asyncio.get_running_loop()
        main = asyncio.create_task(self.run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await main
        if main.cancelled():
            self.log.info("Stopped")


main = LifespanService.launch_instance
