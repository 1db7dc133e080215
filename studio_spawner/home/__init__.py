"""The studio home: the hub's page of studios (see docs/home.md).

One call in ``jupyterhub_config.py`` sets it up::

    from studio_spawner.home import configure_studio_home
    configure_studio_home(c)
"""

from __future__ import annotations

from typing import Any

from jupyterhub.utils import url_path_join

from .config import TEMPLATES, StudioHome
from .handlers import handlers

__all__ = ["StudioHome", "configure_studio_home", "handlers", "studios_url"]


def studios_url(handler: Any) -> str:
    """Where users land after login: the studio home (``c.JupyterHub.default_url``)."""
    return url_path_join(handler.hub.base_url, "studios")


def configure_studio_home(c: Any, *, landing: bool = True) -> None:
    """Add the studio home's pages and templates to the hub; land users on it after login.

    The templates put "Studios" first in the hub's navigation bar and add "Back to the
    studio's form" to the progress page.
    """
    c.JupyterHub.extra_handlers.extend(handlers())
    c.JupyterHub.template_paths.insert(0, str(TEMPLATES))
    if landing:
        c.JupyterHub.default_url = studios_url
