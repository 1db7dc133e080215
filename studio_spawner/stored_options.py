"""What the hub stores for a studio, and when: refuse a spawn body before JupyterHub stores it.

JupyterHub writes a spawn request's body to the server's ``user_options`` column before
``Spawner.start`` runs, and keeps it when ``start`` refuses it. A listener on that column hands
the body to the studio's spawner instead (``StoredOptionsGuard.receive_options_body``), which
refuses a body that is not a JSON object (400) or comes from someone other than the owner or a
hub admin (403), and keeps the stored options unchanged: the spawner stores the normalised
options itself once they validate (``save_options``).

Without a start (JupyterHub 6's ``PUT`` "add only" and ``PATCH``), the body is validated and
stored, normalised, at once. Who made the request comes from the request being handled: a
wrapper around JupyterHub's ``BaseHandler.prepare`` remembers it in a context variable, which
also holds in requests that never set ``spawner.handler``.

Secrets (env values and the init script) never go into ``user_options``, which anyone with
``read:servers`` on the server can read: they live in the spawner's state, which needs
``admin:server_state``.
"""

from __future__ import annotations

import contextvars
import functools
import weakref
from collections.abc import Mapping
from typing import Any, NoReturn

from sqlalchemy import event
from sqlalchemy.orm import object_session
from tornado import web
from traitlets import validate
from traitlets.config import LoggingConfigurable

from .errors import OptionsError

SECRET_KEYS = ("env", "init_script")
STATE_KEY = "studio_secrets"
#: The JupyterHub request handler of the current request (see install()).
CURRENT_HANDLER: contextvars.ContextVar[Any] = contextvars.ContextVar("studio_handler",
                                                                     default=None)


def split_secrets(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the options without secrets, the secrets that were present)."""
    public = {k: v for k, v in options.items() if k not in SECRET_KEYS}
    return public, {k: options[k] for k in SECRET_KEYS if k in options}


def join_secrets(public: Mapping[str, Any], secrets: Mapping[str, Any]) -> dict[str, Any]:
    return {**public, **secrets}


class StoredOptionsGuard(LoggingConfigurable):
    """Spawner mixin: who may store options, and keeping secrets out of ``user_options``."""

    _pending_secrets: dict[str, Any] | None = None  # from the body of the current request
    _studio_secrets: dict[str, Any] | None = None  # saved with the last valid options
    _storing = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None:
            orm_spawner._studio_spawner = weakref.ref(self)

    @validate("user_options")
    def _keep_secrets_out(self, proposal: dict) -> dict[str, Any]:
        public, secrets = split_secrets(proposal["value"])
        if secrets:
            self._pending_secrets = secrets
        return public

    def _handler(self) -> Any:
        return CURRENT_HANDLER.get() or getattr(self, "handler", None)

    def requester_may_change_options(self) -> bool:
        """The owner and hub admins (``admin:servers``) may; no handler: the hub itself."""
        handler = self._handler()
        requester = handler.current_user if handler is not None else None
        if requester is None:
            return True
        if getattr(requester, "kind", None) == "user" and requester.name == self.user.name:
            return True
        return bool(handler.has_scope("admin:servers"))

    def receive_options_body(self, body: Any) -> dict[str, Any] | None:
        """A request's options, before the hub stores them: refuse them (HTTP 400, 403); for
        a start, keep them for start() (None: the stored options stay as they are); without a
        start, validate them and return what to store."""
        if not isinstance(body, dict):
            self._refuse(400, "options: the request body must be a JSON object of studio "
                         "options, such as {\"name\": \"My studio\"}")
        if not self.requester_may_change_options():
            self._refuse(403, "Only the studio's owner can change its options or start it the "
                         "first time; start it without options to use the ones its owner saved")
        if getattr(self, "_spawn_pending", False):  # start() validates and stores them
            self._pending_secrets = split_secrets(body)[1]
            return None
        try:
            # Everything but the environment.yml's contents, which can be slow to check and
            # would block the event loop here: start() checks them, off the loop, before
            # anything is created.
            options = self.parse(body, conda_problems=[])  # type: ignore[attr-defined]
        except OptionsError as error:
            self._refuse(400, error.jupyterhub_message, error)
        public, secrets = split_secrets(options.to_user_options())
        self._studio_secrets, self._pending_secrets = secrets, None
        self.studio_saved = True  # saved without a start (PUT): a refused start keeps it
        self.orm_spawner.state = {**(self.orm_spawner.state or {}), **self.get_state()}
        self.user_options = public  # what the hub shows, as stored
        return public

    def _refuse(self, status: int, message: str, cause: Exception | None = None) -> NoReturn:
        """Refuse a request's options. JupyterHub 6's PUT has created the server's row before
        it stores the options: a refused PUT removes that row again, so it leaves nothing."""
        request = getattr(self._handler(), "request", None)
        if getattr(request, "method", None) == "PUT":
            session = object_session(self.orm_spawner)
            self.user.spawners.pop(self.name, None)  # type: ignore[attr-defined]
            if session is not None:
                session.delete(self.orm_spawner)
                session.commit()
        if cause is None:
            raise web.HTTPError(status, message)
        raise web.HTTPError(status, "%s", message) from cause  # user input may hold a %

    def raw_options(self) -> dict[str, Any]:
        """The options to validate: the request's, or the saved ones, with their secrets."""
        public = dict(self.user_options or {})
        pending = self._pending_secrets
        return join_secrets(public, pending if pending is not None else self._studio_secrets or {})

    def saved_secrets_for_requester(self) -> dict[str, Any] | None:
        """The saved secrets (env values, init script) for the owner; None for anyone else."""
        handler = self._handler()
        requester = handler.current_user if handler is not None else None
        own = requester is not None and getattr(requester, "kind", None) == "user" and (
            requester.name == self.user.name)
        return dict(self._studio_secrets or {}) if own else None

    def saved_options_for_form(self) -> dict[str, Any]:
        """The saved options to pre-fill the form; secrets only for the owner's own form."""
        saved = dict(getattr(self.orm_spawner, "user_options", None) or self.user_options or {})
        return join_secrets(split_secrets(saved)[0], self.saved_secrets_for_requester() or {})

    def save_options(self, stored: Mapping[str, Any]) -> None:
        """Store valid, normalised options: the public part for the hub, secrets in state."""
        public, secrets = split_secrets(stored)
        self._storing = True
        try:
            self.orm_spawner.user_options = public
        finally:
            self._storing = False
        self.user_options = public
        self._studio_secrets, self._pending_secrets = secrets, None

    def refuse_options(self) -> None:
        """Forget a refused request's options: the spawner shows the saved ones again."""
        self._pending_secrets = None
        self.user_options = dict(getattr(self.orm_spawner, "user_options", None) or {})

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()  # type: ignore[misc]
        if self._studio_secrets:
            state[STATE_KEY] = self._studio_secrets
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        if STATE_KEY in state:
            self._studio_secrets = dict(state[STATE_KEY])


def _on_store(target: Any, value: Any, oldvalue: Any, _initiator: Any) -> Any:
    """The `set` listener on ``Spawner.user_options``: the spawner decides, the old value stays."""
    ref = getattr(target, "_studio_spawner", None)
    spawner = ref() if ref is not None else None
    if spawner is None or spawner._storing:
        return value
    stored = spawner.receive_options_body(value)
    if stored is not None:
        return stored
    return oldvalue if isinstance(oldvalue, dict) else None


def _remember_handler(prepare: Any) -> Any:
    @functools.wraps(prepare)
    async def prepare_and_remember(self: Any, *args: Any, **kwargs: Any) -> Any:
        CURRENT_HANDLER.set(self)
        return await prepare(self, *args, **kwargs)

    prepare_and_remember.studio_remembers_handler = True  # type: ignore[attr-defined]
    return prepare_and_remember


def install() -> None:
    """Listen to JupyterHub's ``user_options`` column, and remember each request's handler
    (once per process)."""
    from jupyterhub import orm
    from jupyterhub.handlers.base import BaseHandler

    if not event.contains(orm.Spawner.user_options, "set", _on_store):
        event.listen(orm.Spawner.user_options, "set", _on_store, retval=True)
    if not getattr(BaseHandler.prepare, "studio_remembers_handler", False):
        BaseHandler.prepare = _remember_handler(BaseHandler.prepare)
