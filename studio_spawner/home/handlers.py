"""Tornado handlers of the studio home, inside the hub (its look, login and scopes).

Pages: ``/hub/studios`` (views mine, shared, workspace, all), ``/hub/studios/new`` (new and
duplicate), ``/hub/studios/<owner>/<server>`` (details) and ``…/edit``; ``…/extend`` grants
lifespan; ``/hub/api/studios/lifespan-policy`` gives the lifespan service its policy.
Start, stop and delete go through the hub's REST API from the page (``home.js``), so the hub
checks them with its own scopes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote, urlencode

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import Scope
from jupyterhub.utils import url_path_join
from tornado import web

from ..errors import OptionsError
from ..form import form_values, render_form, submitted_values
from ..lifespan import POLICY_PATH
from ..lifespan.policy import PolicyError
from ..lifespan.store import ExtensionStore
from ..lifespan.studios import StudioRules
from ..options import form_to_raw
from ..studio_status import START_FAILED, LastFailure
from .config import StudioHome, catalog_view
from .rows import StudioRow, failure_field, studio_row
from .servers import (
    VIEWS,
    listed,
    managed_workspaces,
    permissions,
    server_name_for,
    spawners_for_view,
)

OWNER = r"([^/]+)"
SERVER = r"([^/]*)"  # "": the user's default server (/hub/studios/<owner>/)
POLICY_ROUTE = "/api" + POLICY_PATH  # under the hub's API (/hub/api)
FORM_BANNER = ""  # the form's error "field" shown in its banner (concerns no one field)
SPAWN_END_SECONDS = 5  # how long a failed start's form waits for the spawn to end


def duration_text(seconds: float | None) -> str:
    """'2 h 10 min', '45 min' (the page's text before the browser shows local times)."""
    minutes = max(0, round((seconds or 0) / 60))
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


class HomeHandler(BaseHandler):
    """Shared lookups: the configuration, the lifespan rules and rows with their rights."""

    @property
    def home(self) -> StudioHome:
        if "studio_home" not in self.settings:
            self.settings["studio_home"] = StudioHome(config=self.settings["config"])
        return self.settings["studio_home"]

    @property
    def catalog(self) -> Any:
        if "studio_catalog" not in self.settings:
            self.settings["studio_catalog"] = catalog_view(
                self.settings.get("spawner_class"), self.settings["config"])
        return self.settings["studio_catalog"]

    @property
    def rules(self) -> StudioRules:
        if "studio_rules" not in self.settings:
            catalog = self.catalog
            self.settings["studio_rules"] = StudioRules(
                catalog.lifespan_policy(), catalog.lifespan_group_policy_entries(),
                ExtensionStore(self.home.lifespan_extensions_file),
                hour_seconds=catalog.lifespan_hour_seconds,
                warning_seconds=catalog.lifespan_warning_minutes * 60
                * catalog.lifespan_hour_seconds / 3600,
            )
        return self.settings["studio_rules"]

    def row(self, orm_spawner: orm.Spawner) -> StudioRow:
        owner = orm_spawner.user
        user = self.users[owner]
        live = dict.get(user.spawners, orm_spawner.name)  # no new Spawner for a listing
        can = permissions(self.parsed_scopes, self.current_user.name, owner, orm_spawner.name)
        return studio_row(orm_spawner, live, can, self.rules)

    def studio(self, owner_name: str, server: str) -> tuple[Any, orm.Spawner, StudioRow]:
        """The owner, the server's row and what I may do; 404 when I may not see it."""
        user = self.find_user(owner_name)
        orm_spawner = user.orm_spawners.get(server) if user else None
        if orm_spawner is None or not listed(orm_spawner):
            raise web.HTTPError(404, f"No studio {owner_name}/{server}")
        row = self.row(orm_spawner)
        visible = row.can.open or row.can.manage or row.can.edit or self._may_read(row)
        if not visible:
            raise web.HTTPError(404, f"No studio {owner_name}/{server}")
        return user, orm_spawner, row

    def _may_read(self, row: StudioRow) -> bool:
        filters = self.parsed_scopes.get("read:servers")
        return filters == Scope.ALL or (
            filters is not None and row.owner in filters.get("user", ()))

    def studio_url(self, owner: str, server: str, *parts: str) -> str:
        """A studio's page (or ``parts`` under it); the default server's is ``…/<owner>/``."""
        path = "/".join([quote(owner, safe=""), quote(server, safe=""), *parts])
        return url_path_join(self.hub.base_url, "studios") + "/" + path

    def form_data(self) -> dict[str, list[str]]:
        return {key: [value.decode("utf8") for value in values]
                for key, values in self.request.body_arguments.items()}

    async def render(self, template: str, **namespace: Any) -> None:  # type: ignore[override]
        html = await self.render_template(
            template, templates=self.catalog.template_entries(), duration=duration_text,
            **namespace)
        self.finish(html)


class StudiosHandler(HomeHandler):
    """The list: Mine, Shared with me, Workspace (managers), All (hub admins)."""

    @web.authenticated
    async def get(self) -> None:
        me = self.current_user
        workspaces = managed_workspaces(role.name for role in me.orm_user.roles)
        admin = self.parsed_scopes.get("admin:servers") == Scope.ALL
        views = ["mine", "shared"] + (["workspace"] if workspaces else []) + (
            ["all"] if admin else [])
        view = self.get_argument("view", "mine")
        if view not in VIEWS:
            raise web.HTTPError(400, f"view: use one of {', '.join(views)}")
        if view not in views:
            raise web.HTTPError(403, f"view: {view} is not open to you")
        spawners = spawners_for_view(self.db, me.orm_user, view, workspaces=workspaces)
        rows = [self.row(s) for s in spawners]
        if view == "shared":
            rows = [r for r in rows if r.can.open]
        await self.render("studios.html", view=view, views=views, rows=rows,
                          workspaces=workspaces, message=self.get_argument("message", ""),
                          error=self.get_argument("error", ""))


class StudioHandler(HomeHandler):
    """One studio: status, the last failure and its report, time left, configuration."""

    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        user, orm_spawner, row = self.studio(owner, server)
        # (another spawner class than StudioSpawner keeps no secrets apart: shown as hidden)
        reveal = getattr(user.spawners[server], "saved_secrets_for_requester", None)
        secrets = reveal() if reveal is not None else None
        await self.render("studio.html", row=row, catalog=self.catalog,
                          home_volume=self.home_volume(user, server), secrets=secrets,
                          message=self.get_argument("message", ""),
                          error=self.get_argument("error", ""))

    def home_volume(self, user: Any, server: str) -> str | None:
        spawner = user.spawners[server]
        return getattr(spawner, "pvc_name", None)


class FormHandler(HomeHandler):
    """The studio form in the hub's page: render, and parse a submit with the spawner's rules."""

    async def show(self, spawner: Any, values: dict[str, Any], errors: dict[str, str], *,
                   mode: str, owner: str, server: str = "", status: int = 200) -> None:
        form = render_form(spawner, values, errors=errors, workspaces=spawner.workspaces(),
                           existing_disk_gib=getattr(spawner, "_studio_disk_gib", None))
        self.set_status(status)
        saved = getattr(spawner.orm_spawner, "user_options", None) or {}
        await self.render("studio_form.html", form=form, mode=mode, owner=owner,
                          server=server, display_name=saved.get("name") or server,
                          errors=errors, error_summary=bool(errors))

    def parse_submit(self, spawner: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The submitted options, or None and the errors by field."""
        raw, problems = form_to_raw(self.form_data())
        try:
            return spawner.parse(raw, form_errors=problems).to_user_options(), {}
        except OptionsError as error:
            return None, error.by_field

    def save(self, spawner: Any, options: dict[str, Any]) -> None:
        """Store the options for the next start, and mark the studio as saved."""
        spawner.save_options(options)  # env values and the init script go to the state
        spawner.studio_saved = True
        if hasattr(spawner.orm_spawner, "display_name"):  # JupyterHub 6
            spawner.orm_spawner.display_name = options.get("name")
        if not spawner.active:
            spawner.orm_spawner.state = spawner.get_state()
        self.db.commit()

    async def start_then_redirect(self, user: Any, server: str, spawner: Any,
                                  values: dict[str, Any]) -> None:
        """Start; a fast failure comes back to the form, kept as typed, with the reason beside
        the field it concerns (in the banner when it concerns none)."""
        before = spawner.last_failure
        try:
            await self.spawn_single_user(user, server)
        except Exception as error:
            failure = await self.start_failure(spawner, error, before)
            field = failure_field(failure, values) or FORM_BANNER
            await self.show(spawner, values, {field: failure.message}, mode="edit",
                            owner=user.name, server=server, status=400)
            return
        self.redirect(url_path_join(self.hub.base_url, "spawn-pending",
                                    quote(user.name, safe=""), quote(server, safe="")))

    async def start_failure(self, spawner: Any, error: Exception,
                            before: LastFailure | None) -> LastFailure:
        """Why a start failed, as the spawner recorded it (its ``last_failure``).

        The hub's handler may raise its own error (JupyterHub 5.5 can raise asyncio's
        InvalidStateError while the spawn still runs): the spawn's own future says how it ended,
        so wait a little for it; without a new recorded failure (``before`` is the one recorded
        before), the error itself is recorded.
        """
        future = getattr(spawner, "_spawn_future", None)
        if future is not None and not future.done():
            await asyncio.wait([future], timeout=SPAWN_END_SECONDS)
        if spawner.last_failure in (None, before):
            reason = getattr(error, "jupyterhub_message", None) or str(error)
            if isinstance(error, asyncio.InvalidStateError) or not reason:
                reason = "the server stopped during its start; see the studio's page"
            spawner.last_failure = failure = LastFailure.now(START_FAILED + reason)
            if not spawner.active:
                spawner.orm_spawner.state = spawner.get_state()
                self.db.commit()
            return failure
        return spawner.last_failure


class NewStudioHandler(FormHandler):
    """New studio (or Duplicate with ?from=owner/server): Add, or Add and start."""

    def draft(self) -> Any:
        """A spawner for the form and the checks; it is not in the hub's database."""
        user = self.current_user
        return user.spawner_class(
            user=user, orm_spawner=orm.Spawner(name=""), hub=self.hub,
            authenticator=self.authenticator, config=self.settings["config"],
            _deprecated_db_session=self.db, user_options={},
        )

    @web.authenticated
    async def get(self) -> None:
        spawner = self.draft()
        source = self.get_argument("from", "")
        saved: dict[str, Any] = {}
        if source:
            owner, _, server = source.partition("/")
            source_user, _, row = self.studio(owner, server)
            saved = source_user.spawners[server].saved_options_for_form()
            saved["name"] = f"Copy of {row.display_name}"[:64]
        values = form_values(spawner, saved)
        await self.show(spawner, values, {}, mode="new", owner=self.current_user.name)

    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        spawner = self.draft()
        values = submitted_values(self.form_data())
        options, errors = self.parse_submit(spawner)
        limit = await self.get_current_user_named_server_limit()
        named = [name for name in user.orm_spawners if name]
        if options and limit and len(named) >= limit:
            errors = {FORM_BANNER: f"You have {len(named)} studios, the most allowed; delete "
                                   "one you no longer need first."}
        if options is None or errors:
            await self.show(spawner, values, errors, mode="new", owner=user.name, status=400)
            return
        server = server_name_for(options["name"], user.orm_spawners)
        create = getattr(user, "get_or_create_spawner", None)  # JupyterHub 6, with a name
        # now the hub creates the server's row
        spawner = create(server, options["name"]) if create else user.spawners[server]
        self.save(spawner, options)
        if self.get_body_argument("action", "add") == "add-and-start":
            await self.start_then_redirect(user, server, spawner, values)
            return
        self.redirect(self.studio_url(user.name, server) + "?" + urlencode(
            {"message": f"Added {options['name']}; start it when you need it"}))


class EditStudioHandler(FormHandler):
    """Change a studio's options for its next start (the owner or a hub admin)."""

    def editable(self, owner: str, server: str) -> tuple[Any, Any, StudioRow]:
        user, _, row = self.studio(owner, server)
        if not row.can.edit:
            raise web.HTTPError(403, "Only the studio's owner can change its options")
        return user, user.spawners[server], row

    @web.authenticated
    async def get(self, owner: str, server: str) -> None:
        user, spawner, row = self.editable(owner, server)
        values = form_values(spawner, spawner.saved_options_for_form(), server)
        errors = {}
        if row.failure:
            errors[row.failure_field or "name"] = row.failure.message
        await self.show(spawner, values, errors, mode="edit", owner=user.name, server=server)

    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        user, spawner, row = self.editable(owner, server)
        values = submitted_values(self.form_data())
        options, errors = self.parse_submit(spawner)
        if options is None:
            await self.show(spawner, values, errors, mode="edit", owner=user.name,
                            server=server, status=400)
            return
        self.save(spawner, options)
        start = self.get_body_argument("action", "save") == "save-and-start"
        if start and not spawner.active:
            await self.start_then_redirect(user, server, spawner, values)
            return
        note = ("; its name and description change now, its other options at its next start"
                if spawner.active else "")
        self.redirect(self.studio_url(user.name, server) + "?" + urlencode(
            {"message": f"Saved {options['name']}{note}"}))


class ExtendHandler(HomeHandler):
    """Extend a running studio's lifespan (the owner or a hub admin), then back to the page."""

    @web.authenticated
    async def post(self, owner: str, server: str) -> None:
        _, _, row = self.studio(owner, server)
        back = self.get_body_argument("next", "") or self.studio_url(owner, server)
        if not back.startswith(self.hub.base_url):
            back = self.studio_url(owner, server)
        query: dict[str, str] = {}
        try:
            if not row.can.extend:
                raise PolicyError("only the studio's owner can extend it")
            if row.status != "running":
                raise PolicyError("only a running studio can be extended")
            hours = float(self.get_body_argument("hours"))
            user = self.find_user(owner)
            server_model = {"name": server, "started": row.started, "ready": True,
                            "user_options": row.options}
            studio = self.rules.studio(
                {"name": owner, "groups": [g.name for g in user.groups]}, server_model)
            self.rules.extend(studio, hours)
        except (ValueError, PolicyError) as error:
            query["error"] = f"{row.display_name}: {error}"
        else:
            query["message"] = f"{row.display_name} extended by {hours:g} h"
            self.log.info("%s extended %s/%s by %g h", self.current_user.name, owner, server,
                          hours)
        separator = "&" if "?" in back else "?"
        self.redirect(back + separator + urlencode(query))


class LifespanPolicyHandler(APIHandler):
    """The lifespan policy as JSON, for the lifespan service (any token of the hub)."""

    def get(self) -> None:
        if self.current_user is None:
            raise web.HTTPError(403, "send a token of the hub")
        catalog = catalog_view(self.settings.get("spawner_class"), self.settings["config"])
        self.finish(json.dumps(policy_document(catalog)))


def policy_document(catalog: Any) -> dict[str, Any]:
    """The one lifespan policy (``c.StudioSpawner.lifespan_*``) as the service reads it."""
    base = catalog.lifespan_policy()
    return {
        "policy": vars(base),
        "group_policies": dict(catalog.lifespan_group_policies),
        "hour_seconds": catalog.lifespan_hour_seconds,
        "warning_minutes": catalog.lifespan_warning_minutes,
    }


def handlers() -> list[tuple[str, type[BaseHandler]]]:
    """The routes, relative to the hub's prefix (``c.JupyterHub.extra_handlers``)."""
    return [
        (r"/studios/?", StudiosHandler),
        (r"/studios/new", NewStudioHandler),
        (POLICY_ROUTE, LifespanPolicyHandler),
        (rf"/studios/{OWNER}/{SERVER}/edit", EditStudioHandler),
        (rf"/studios/{OWNER}/{SERVER}/extend", ExtendHandler),
        (rf"/studios/{OWNER}/{SERVER}/?", StudioHandler),
    ]
