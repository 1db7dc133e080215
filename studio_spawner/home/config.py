"""The studio home's settings, and the spawner's catalogue as the home reads it."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from traitlets import Unicode, default
from traitlets.config import Config, Configurable

from ..catalog import StudioCatalog
from ..sharing import WorkspaceSharing

TEMPLATES = Path(__file__).parent / "templates"


class StudioHome(Configurable):
    """Settings of the studio home (``c.StudioHome.*``)."""

    lifespan_extensions_file = Unicode(
        config=True,
        help="""The lifespan service's extensions file (<its data_dir>/extensions.json): the
        home shows the time left with the extensions and writes the ones users grant. Default:
        ./lifespan-data/extensions.json in the hub's directory, the managed service's default
        data_dir.""",
    )

    @default("lifespan_extensions_file")
    def _default_extensions_file(self) -> str:
        return os.path.abspath(os.path.join("lifespan-data", "extensions.json"))


class _CatalogView(WorkspaceSharing, StudioCatalog):
    """The catalogue and sharing settings, configured like the hub's spawner class."""


@lru_cache(maxsize=8)
def _view_class(spawner_class: type | None) -> type[_CatalogView]:
    own = spawner_class.section_names() if hasattr(spawner_class, "section_names") else []
    sections = ["StudioCatalog", "StudioSpawner", *own]  # c.StudioSpawner.* with any spawner

    class CatalogView(_CatalogView):
        @classmethod
        def section_names(cls) -> list[str]:
            return list(dict.fromkeys([*super().section_names(), *sections]))

    return CatalogView


def catalog_view(spawner_class: type | None, config: Config) -> Any:
    """The lifespan policy and catalogue from ``c.StudioSpawner.*`` (or the spawner class's
    own sections), without a spawner: one source of truth for the home and the service.

    The view gets only the settings it has, so traitlets does not warn about the spawner's
    others (conda_solve, KubeSpawner's, …) at every request."""
    view = _view_class(spawner_class)
    known = set(view.class_trait_names(config=True))
    own = Config()
    for section in view.section_names():
        if section in config:
            own[section] = Config({k: v for k, v in config[section].items() if k in known})
    return view(config=own)
