"""The spawn form: a Jinja2 template with plain CSS and JS inlined (no build step)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, select_autoescape

from ..catalog import StudioCatalog
from ..options import DESCRIPTION_MAX, NAME_MAX, mapping_to_lines

_FIELD_ROOT = re.compile(r"[a-z_]+")


@lru_cache(maxsize=1)
def _assets() -> tuple[Any, str, str]:
    folder = files(__package__)
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    template = env.from_string(folder.joinpath("form.html").read_text())
    return template, folder.joinpath("form.css").read_text(), folder.joinpath("form.js").read_text()


def form_values(
    catalog: StudioCatalog, saved: Mapping[str, Any] | None, default_name: str = ""
) -> dict[str, Any]:
    """Values to pre-fill: the studio's saved options where present, else the defaults."""
    saved = dict(saved or {})
    templates = list(catalog.template_entries())
    custom = saved.get("template") is None and bool(saved.get("image"))
    data = [d for d in saved.get("data") or [] if isinstance(d, Mapping)]
    lifespan = saved.get("lifespan_hours", catalog.lifespan_default_hours)
    return {
        "name": saved.get("name") or default_name,
        "description": saved.get("description", ""),
        "workspace": saved.get("workspace"),
        "source": "custom" if custom or not templates else "template",
        "template": saved.get("template") or (templates[0] if templates else None),
        "image": saved.get("image") if custom else "",
        "kind": saved.get("kind") or "jupyter",
        "environment_yml": saved.get("environment_yml", ""),
        "data": [d.get("name") for d in data],
        "data_writable": [d.get("name") for d in data if d.get("writable")],
        "private": saved.get("private", catalog.private_default),
        "keep_running": "lifespan_hours" in saved and lifespan is None,
        "lifespan_hours": lifespan if lifespan is not None else catalog.lifespan_default_hours,
        "env": mapping_to_lines(saved.get("env") or {}),
        "labels": mapping_to_lines(saved.get("labels") or {}),
        "resources": saved.get("resources"),
        "disk_gib": saved.get("disk_gib", catalog.disk_default_gib),
        "init_script": saved.get("init_script", ""),
    }


def submitted_values(formdata: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Values to re-fill after a failed submit: exactly what the user typed."""

    def one(key: str, default: str = "") -> str:
        return (formdata.get(key) or [default])[0]

    return {
        "name": one("name"),
        "description": one("description"),
        "workspace": one("workspace") or None,
        "source": one("environment_source", "template"),
        "template": one("template") or None,
        "image": one("image"),
        "kind": one("kind", "jupyter"),
        "environment_yml": one("environment_yml"),
        "data": list(formdata.get("data", [])),
        "data_writable": list(formdata.get("data_writable", [])),
        "private": one("private") == "true",
        "keep_running": one("keep_running") == "true",
        "lifespan_hours": one("lifespan_hours"),
        "env": one("env"),
        "labels": one("labels"),
        "resources": one("resources") or None,
        "disk_gib": one("disk_gib"),
        "init_script": one("init_script"),
    }


def field_errors(errors: Mapping[str, str]) -> dict[str, list[str]]:
    """Map error fields such as env.FOO or data[0].name to the form input they belong to
    (each input's messages in order, one per line on the form)."""
    shown: dict[str, list[str]] = {}
    for field, message in errors.items():
        root = _FIELD_ROOT.match(field)
        key = root.group(0) if root else field
        detail = field[len(key):].lstrip(".")
        text = f"{detail}: {message}" if detail and not detail.startswith("[") else message
        shown.setdefault(key, []).append(text)
    return shown


FORM_FIELDS = frozenset({
    "name", "description", "workspace", "template", "image", "kind", "environment_yml", "data",
    "private", "lifespan_hours", "env", "labels", "resources", "disk_gib", "init_script"})


def shown_fields(catalog: StudioCatalog, values: Mapping[str, Any], *,
                 workspaces: Sequence[str], presets: bool) -> set[str]:
    """The fields the form shows now: an error on any other goes in the banner."""
    hidden = set()
    if values.get("source") == "custom":
        hidden.add("template")
    else:
        hidden |= {"image", "kind"}
    if not catalog.allow_custom_images:
        hidden |= {"image", "kind"}
    if not catalog.allow_custom_tools:
        hidden.add("kind")
    if len(workspaces) <= 1:
        hidden.add("workspace")
    if not presets:
        hidden.add("resources")
    return set(FORM_FIELDS - hidden)


def render_form(
    catalog: StudioCatalog,
    values: Mapping[str, Any],
    *,
    errors: Mapping[str, str] | None = None,
    workspaces: Sequence[str] = (),
    existing_disk_gib: int | None = None,
) -> str:
    """Render the form's HTML for the hub's spawn page."""
    template, css, js = _assets()
    all_errors = field_errors(errors or {})
    presets = catalog.presets_for(None)
    fields = shown_fields(catalog, values, workspaces=workspaces, presets=bool(presets))
    shown = {field: text for field, text in all_errors.items() if field in fields}
    advanced = {"env", "labels", "resources", "disk_gib", "init_script"}
    return template.render(
        css=css,
        js=js,
        values=values,
        errors=shown,
        banner_errors=[text for field, text in all_errors.items() if field not in fields],
        advanced_open=bool(advanced & set(shown)),
        workspaces=list(workspaces),
        templates=list(catalog.template_entries().values()),
        repositories=list(catalog.repository_entries().values()),
        presets=presets,
        allow_custom_images=catalog.allow_custom_images,
        allow_custom_tools=catalog.allow_custom_tools,
        allowed_registries=catalog.allowed_registries,
        allow_conda_with_custom_image=catalog.allow_conda_with_custom_image,
        require_image_digest=catalog.require_image_digest,
        conda_channels=catalog.conda_channels,
        environment_yml_example=catalog.environment_yml_example,
        conda_kernel_package=catalog.conda_kernel_package,
        image_example=catalog.image_example(),
        limits={"name": NAME_MAX, "description": DESCRIPTION_MAX},
        lifespan={
            "locked": catalog.lifespan_locked,
            "default": catalog.lifespan_default_hours,
            "min": catalog.lifespan_min_hours,
            "max": catalog.lifespan_max_hours,
            "allow_keep_running": catalog.allow_keep_running,
        },
        disk={"min": catalog.disk_min_gib, "max": catalog.disk_max_gib,
              "existing": existing_disk_gib},
    )
