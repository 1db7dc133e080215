"""The lifespan service: stops studios when their time is up, lets users extend them.

``lifespan_role()`` and ``lifespan_service()`` give the hub configuration for it::

    c.JupyterHub.services = [lifespan_service()]
    c.JupyterHub.load_roles = [lifespan_role()]
"""

from __future__ import annotations

import sys
from typing import Any

SERVICE_NAME = "lifespan"
#: Where the studio home serves the one lifespan policy, under the hub's API URL.
POLICY_PATH = "/studios/lifespan-policy"

#: The narrowest scopes the service needs: list users with ready servers (``list:users``),
#: read their groups for group policies (``read:users:groups``), read servers with
#: ``started`` and ``user_options`` (``read:servers``), and stop them (``delete:servers``).
SCOPES = ["list:users", "read:users:groups", "read:servers", "delete:servers"]


def lifespan_role(service: str = SERVICE_NAME) -> dict[str, Any]:
    """The ``c.JupyterHub.load_roles`` entry granting the service its scopes."""
    return {"name": f"{service}-service", "description": "Stop studios when their lifespan is up",
            "scopes": list(SCOPES), "services": [service]}


def lifespan_service(*, name: str = SERVICE_NAME, port: int = 10101, managed: bool = True,
                     url: str | None = None, args: list[str] | None = None,
                     data_dir: str | None = None,
                     environment: dict[str, str] | None = None,
                     policy_from_hub: bool = False,
                     python: str = sys.executable) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry; ``managed=False`` for a service run elsewhere.

    A managed service is started by the hub with ``python -m studio_spawner.lifespan``; extra
    command line ``args`` (e.g. ``["--interval=60"]``) go after it; ``data_dir`` is where
    extensions persist (default ``./lifespan-data`` in the hub's directory). Users reach the page at
    ``/services/<name>/`` through Hub OAuth. ``policy_from_hub``: the service takes its policy
    from ``c.StudioSpawner.lifespan_*`` through the studio home (``--policy-from-hub``).
    """
    entry: dict[str, Any] = {
        "name": name,
        "url": url or f"http://127.0.0.1:{port}",
        "oauth_no_confirm": True,
        "display": True,
    }
    if managed:
        entry["command"] = [python, "-m", "studio_spawner.lifespan", *(args or [])]
        if data_dir:
            entry["command"].append(f"--data-dir={data_dir}")
        if policy_from_hub:  # its page is the studio home: no menu entry of its own
            entry["command"].append("--policy-from-hub")
            entry["display"] = False
        if environment:
            entry["environment"] = dict(environment)
    return entry


def user_access_role(service: str = SERVICE_NAME) -> dict[str, Any]:
    """The default ``user`` role plus access to the service, for every user.

    JupyterHub lets a user through a service's OAuth flow only with
    ``access:services!service=<name>``, which the stock ``user`` role lacks; the same scope
    lets API tokens (e.g. ``$JUPYTERHUB_API_TOKEN`` in a studio, when
    ``c.Spawner.server_token_scopes`` includes it) call the JSON API. Merge it into your own
    ``user`` role if you already redefine it.
    """
    return {"name": "user", "scopes": ["self", f"access:services!service={service}"]}


__all__ = ["POLICY_PATH", "SCOPES", "SERVICE_NAME", "lifespan_role", "lifespan_service",
           "user_access_role"]
