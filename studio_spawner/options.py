"""StudioOptions: the one validated value that describes a studio.

`parse_options` turns raw input (a JSON body, or form data via `form_to_raw`) into a
`StudioOptions`, or raises `OptionsError` naming every bad field. It is pure: no I/O.
`StudioOptions.to_user_options()` is what the hub stores; parsing it again gives the same value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .catalog import KINDS, StudioCatalog, Template
from .conda_spec import validate_environment_yml
from .errors import Collector, FieldError
from .images import ecr_policy_error
from .validators import (
    control_character,
    env_name_error,
    label_key_error,
    label_value_error,
    parse_image,
    registry_allowed,
    text_error,
)

NAME_MAX = 64
DESCRIPTION_MAX = 500
KNOWN_KEYS = (
    "name", "description", "template", "image", "environment_yml", "data", "private",
    "workspace", "lifespan_hours", "env", "labels", "resources", "disk_gib", "init_script",
    "kind",
)
_INTEGER = re.compile(r"[0-9]{1,6}")
_OPTION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Control characters an env value may hold (everything but NUL travels through a pod spec).
_ENV_VALUE_CONTROLS = "".join(chr(c) for c in range(1, 32)) + "\x7f"


@dataclass(frozen=True)
class DataMount:
    """A data repository chosen for the studio."""

    name: str
    writable: bool = False


@dataclass(frozen=True)
class StudioOptions:
    """Everything a user chose for a studio, validated against the admin's catalogue."""

    name: str
    image: str
    template: str | None = None
    description: str = ""
    environment_yml: str = ""
    data: tuple[DataMount, ...] = ()
    private: bool = False
    workspace: str | None = None
    lifespan_hours: int | None = 8
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    resources: str | None = None
    disk_gib: int = 10
    init_script: str = ""
    kind: str = "jupyter"

    @property
    def keep_running(self) -> bool:
        return self.lifespan_hours is None

    @property
    def is_tool(self) -> bool:
        """A web tool behind studio-connect, not a Jupyter server."""
        return self.kind == "tool"

    def to_user_options(self) -> dict[str, Any]:
        """The JSON the hub stores as user_options (see docs/architecture.md)."""
        stored = asdict(self)
        stored["data"] = [asdict(mount) for mount in self.data]
        if self.template is not None:
            stored["image"] = None
            stored["kind"] = None  # the template's kind, read again at every start
        return stored


@dataclass
class _Input:
    """Raw input plus the collector: the shared state of one parse."""

    raw: Mapping[str, Any]
    errors: Collector

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value; `default` when the key is missing or null."""
        value = self.raw.get(key)
        return default if value is None else value

    def text(self, key: str, limit: int, *, required: bool = False, multiline: bool = False) -> str:
        value = self.get(key, "")
        if not isinstance(value, str):
            self.errors.add(key, "must be text")
            return ""
        value = value.replace("\r\n", "\n") if multiline else value.strip()
        size = len(value.encode("utf-8", "surrogatepass")) if multiline else len(value)
        if size > limit:  # first: the other checks then only see bounded text
            unit = "bytes" if multiline else "characters"
            self.errors.add(key, f"is too long: at most {limit} {unit}")
            return ""
        if problem := text_error(value, "\n\t" if multiline else ""):
            self.errors.add(key, problem)
            return ""  # later checks (such as the environment.yml's) need valid text
        if required and not value:
            self.errors.add(key, f"is required; enter 1 to {limit} characters")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if isinstance(value, bool):
            return value
        self.errors.add(key, "must be true or false")
        return default

    def integer(self, key: str, default: int | None, low: int, high: int, unit: str) -> int | None:
        value = self.get(key, default)
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.add(key, f"must be a whole number of {unit} from {low} to {high}")
            return default
        if not low <= value <= high:
            self.errors.add(key, f"must be from {low} to {high} {unit}; got {value}")
            return default
        return value

    def mapping(self, key: str, max_count: int) -> dict[str, str]:
        value = self.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.errors.add(key, "must be a mapping of names to text values")
            return {}
        if len(value) > max_count:
            self.errors.add(key, f"at most {max_count} entries are allowed")
        return dict(value)


def parse_options(
    raw: Mapping[str, Any],
    catalog: StudioCatalog,
    *,
    workspaces: Sequence[str] = (),
    workspace_required: bool = False,
    existing_disk_gib: int | None = None,
    form_errors: Sequence[FieldError] = (),
    conda_problems: Sequence[str] | None = None,
) -> StudioOptions:
    """Validate raw options against the catalogue; raise OptionsError listing every problem.

    `workspaces` are the workspaces the user may launch in (`workspace_required`: a studio must
    belong to one of them); `existing_disk_gib` is the size of
    the studio's home volume when it already exists (its size can no longer change);
    `form_errors` are problems `form_to_raw` found, reported together with the rest;
    `conda_problems` are the environment.yml's, when they were found elsewhere (see
    conda_check.py).
    """
    errors = Collector()
    errors.errors.extend(form_errors)
    if not isinstance(raw, Mapping):
        errors.add("options", "must be a JSON object")
        errors.raise_if_any()
    data = _Input(raw, errors)
    unknown = [key for key in raw if key not in KNOWN_KEYS]
    for key in unknown[:5]:
        named = isinstance(key, str) and _OPTION_NAME.fullmatch(key)
        errors.add(key if named else "options",
                   f"unknown option{'' if named else f' {str(key)[:64]!r}'}; known options "
                   f"are {', '.join(KNOWN_KEYS)}")
    if len(unknown) > 5:
        errors.add("options", f"{len(unknown) - 5} more unknown options")
    template, image = _environment(data, catalog)
    kind = _kind(data, catalog, template)
    options = StudioOptions(
        name=data.text("name", NAME_MAX, required=True),
        description=data.text("description", DESCRIPTION_MAX, multiline=True),
        template=template.id if template else None,
        image=image,
        kind=kind,
        environment_yml=_conda(data, catalog, template, kind, conda_problems),
        data=_data_mounts(data, catalog),
        private=data.boolean("private", catalog.private_default),
        workspace=_workspace(data, workspaces, workspace_required),
        lifespan_hours=_lifespan(data, catalog),
        env=_env(data, catalog),
        labels=_labels(data, catalog),
        resources=_resources(data, catalog, template),
        disk_gib=_disk(data, catalog, existing_disk_gib),
        init_script=_init_script(data, catalog, kind),
    )
    errors.raise_if_any()
    return options


def _environment(data: _Input, catalog: StudioCatalog) -> tuple[Template | None, str]:
    templates = catalog.template_entries()
    template_id = data.get("template", None)
    custom = data.get("image", None)
    if template_id not in (None, ""):
        template = templates.get(template_id) if isinstance(template_id, str) else None
        if template is None:
            choices = ", ".join(templates) or "none (use a custom image)"
            data.errors.add("template", f"unknown template; choose one of: {choices}")
            return None, ""
        if custom not in (None, "", template.image):
            data.errors.add("image", "choose either a template or a custom image, not both")
        return template, template.image
    if custom in (None, ""):
        # "": the form's Custom image chosen and left empty: say so beside that field
        field = "image" if custom == "" and catalog.allow_custom_images else "template"
        data.errors.add(field, "choose a template or enter a custom image")
        return None, ""
    if not catalog.allow_custom_images:
        data.errors.add("image", "custom images are turned off here; choose a template")
        return None, ""
    if not isinstance(custom, str):
        data.errors.add("image", "must be text")
        return None, ""
    reference = parse_image(custom)
    if isinstance(reference, str):
        data.errors.add("image", reference)
    elif not registry_allowed(reference, catalog.allowed_registries):
        allowed = ", ".join(catalog.allowed_registries) or "none"
        data.errors.add(
            "image", f"{reference.repository} is not in an allowed registry; allowed: {allowed}"
        )
    elif problem := ecr_policy_error(
        reference, catalog.ecr_allowed_accounts, catalog.ecr_allowed_regions
    ):
        data.errors.add("image", problem)
    elif catalog.require_image_digest and not reference.digest:
        data.errors.add(
            "image", "pin the image by digest here, e.g. name@sha256:<64 hexadecimal digits>"
        )
    return None, custom


def _kind(data: _Input, catalog: StudioCatalog, template: Template | None) -> str:
    """A template's kind, or the kind chosen for a custom image (tools when allowed)."""
    value = data.get("kind", "")
    if template is not None:
        if value not in ("", template.kind):
            data.errors.add("kind", f"the template '{template.id}' is a {template.kind} studio; "
                            "leave the kind out")
        return template.kind
    if value == "":
        return "jupyter"
    if value not in KINDS:
        data.errors.add("kind", f"choose one of: {', '.join(KINDS)}")
        return "jupyter"
    if value == "tool" and not catalog.allow_custom_tools:
        data.errors.add("kind", "custom images cannot run as web tools here; choose jupyter")
        return "jupyter"
    return value


def _init_script(data: _Input, catalog: StudioCatalog, kind: str) -> str:
    text = data.text("init_script", catalog.init_script_max_bytes, multiline=True)
    if text.strip() and kind == "tool":
        data.errors.add("init_script", "web tools run their own command, without a start-up "
                        "shell; clear the init script")
    return text


def _conda(data: _Input, catalog: StudioCatalog, template: Template | None, kind: str,
           problems: Sequence[str] | None) -> str:
    text = data.text("environment_yml", catalog.environment_yml_max_bytes, multiline=True)
    if not text.strip():
        return ""
    if kind == "tool":
        data.errors.add("environment_yml", "Conda packages are for Jupyter studios; web tools "
                        "run their image as it is; clear the packages")
    elif template is None and data.get("image", None) and not catalog.allow_conda_with_custom_image:
        data.errors.add(
            "environment_yml",
            "Conda packages cannot be added to a custom image here; choose a template or "
            "clear the packages",
        )
    elif template is not None and not template.conda:
        data.errors.add(
            "environment_yml", f"the template '{template.id}' does not accept Conda packages"
        )
    if problems is None:
        problems = validate_environment_yml(
            text, catalog.conda_policy(), catalog.environment_yml_max_bytes
        )
    for problem in problems:
        data.errors.add("environment_yml", problem)
    return text


def _data_mounts(data: _Input, catalog: StudioCatalog) -> tuple[DataMount, ...]:
    value = data.get("data", [])
    repositories = catalog.repository_entries()
    if not isinstance(value, list):
        data.errors.add("data", "must be a list of {name, writable} entries")
        return ()
    if len(value) > len(repositories):
        data.errors.add("data", f"at most {len(repositories)} entries (one per repository)")
        return ()
    mounts: list[DataMount] = []
    for index, item in enumerate(value):
        where = f"data[{index}]"
        if not isinstance(item, Mapping) or set(item) - {"name", "writable"}:
            data.errors.add(where, "must be an object with 'name' and optional 'writable'")
            continue
        name, writable = item.get("name"), item.get("writable", False)
        repository = repositories.get(name) if isinstance(name, str) else None
        if repository is None:
            choices = ", ".join(repositories) or "none"
            data.errors.add(f"{where}.name", f"unknown data repository; choose one of: {choices}")
        elif not isinstance(writable, bool):
            data.errors.add(f"{where}.writable", "must be true or false")
        elif writable and not repository.writable:
            data.errors.add(
                f"{where}.writable", f"'{name}' is read-only; mount it without write access"
            )
        elif any(m.name == name for m in mounts):
            data.errors.add(f"{where}.name", f"'{name}' is chosen twice; choose it once")
        else:
            mounts.append(DataMount(name, writable))
    return tuple(mounts)


def _workspace(data: _Input, workspaces: Sequence[str], required: bool) -> str | None:
    value = data.get("workspace", None)
    if value in (None, ""):
        if len(workspaces) == 1:
            return workspaces[0]
        if required and not workspaces:
            data.errors.add("workspace", "you have no workspace where you may launch studios "
                            "(the launch role or above); ask a workspace admin to add you")
        elif required:
            data.errors.add("workspace", f"choose the studio's workspace: {', '.join(workspaces)}")
        return None
    if value not in workspaces:
        choices = ", ".join(workspaces) or "none"
        data.errors.add("workspace", f"you cannot launch in this workspace; yours: {choices}")
        return None
    return value


def _lifespan(data: _Input, catalog: StudioCatalog) -> int | None:
    default = catalog.lifespan_default_hours
    keep_running = "lifespan_hours" in data.raw and data.raw["lifespan_hours"] is None
    if catalog.lifespan_locked:
        value = data.get("lifespan_hours", default)
        if keep_running or value not in (default, str(default)):
            data.errors.add(
                "lifespan_hours",
                f"the lifespan is fixed by the administrator at {default} hours; leave it as is",
            )
        return default
    if keep_running:
        if not catalog.allow_keep_running:
            data.errors.add(
                "lifespan_hours",
                f"'keep running' is not allowed here; choose {catalog.lifespan_min_hours} to "
                f"{catalog.lifespan_max_hours} hours",
            )
            return default
        return None
    return data.integer(
        "lifespan_hours", default, catalog.lifespan_min_hours, catalog.lifespan_max_hours, "hours"
    )


def _env(data: _Input, catalog: StudioCatalog) -> dict[str, str]:
    env = data.mapping("env", catalog.env_max_count)
    total = sum(len(name) + len(value.encode("utf-8", "surrogatepass")) for name, value in
                env.items())
    if total > catalog.env_max_total_bytes:
        data.errors.add("env", f"the variables take {total} bytes together; the limit is "
                        f"{catalog.env_max_total_bytes} bytes")
    for name, value in env.items():
        problem = env_name_error(name, catalog.protected_env())
        if problem:
            data.errors.add(f"env.{name}", problem)
        elif len(value) > catalog.env_value_max_chars:
            data.errors.add(f"env.{name}", f"at most {catalog.env_value_max_chars} characters")
        elif problem := text_error(value, _ENV_VALUE_CONTROLS):
            data.errors.add(f"env.{name}", problem)
    return env


def _labels(data: _Input, catalog: StudioCatalog) -> dict[str, str]:
    labels = data.mapping("labels", catalog.labels_max_count)
    for key, value in labels.items():
        problem = label_key_error(key, catalog.reserved_labels()) or label_value_error(value)
        if problem:
            data.errors.add(f"labels.{key}", problem)
    return labels


def _resources(data: _Input, catalog: StudioCatalog, template: Template | None) -> str | None:
    allowed = [p.id for p in catalog.presets_for(template)]
    value = data.get("resources", None)
    if value in (None, ""):
        return catalog.default_preset(template)
    if value not in allowed:
        data.errors.add("resources", f"unknown preset; choose one of: {', '.join(allowed) or '-'}")
        return None
    return value


def _disk(data: _Input, catalog: StudioCatalog, existing: int | None) -> int:
    size = data.integer(
        "disk_gib", existing or catalog.disk_default_gib, catalog.disk_min_gib,
        catalog.disk_max_gib, "GiB",
    )
    if existing is not None and size != existing:
        data.errors.add(
            "disk_gib",
            f"the home volume already exists with {existing} GiB and cannot be resized here; "
            f"set {existing}",
        )
        return existing
    return size or catalog.disk_default_gib


def form_to_raw(formdata: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], list[FieldError]]:
    """Turn the spawn form's fields (lists of strings) into raw options for parse_options.

    Returns the raw options and the problems found in the form's own text formats.
    """

    def one(key: str, default: str = "") -> str:
        values = formdata.get(key) or [default]
        return values[0]

    problems: list[FieldError] = []
    source = one("environment_source", "template")
    writable = set(formdata.get("data_writable", []))
    raw: dict[str, Any] = {
        "kind": (one("kind") or None) if source == "custom" else None,
        "name": one("name"),
        "description": one("description"),
        "template": one("template") if source == "template" else None,
        "image": one("image").strip() if source == "custom" else None,
        "environment_yml": one("environment_yml"),
        "data": [{"name": n, "writable": n in writable} for n in formdata.get("data", [])],
        "private": one("private", "false") in ("true", "on", "1"),
        "env": _lines_to_mapping("env", one("env"), problems),
        "labels": _lines_to_mapping("labels", one("labels"), problems),
        "resources": one("resources") or None,
        "disk_gib": one("disk_gib") or None,
        "init_script": one("init_script"),
    }
    if one("keep_running") in ("true", "on"):
        raw["lifespan_hours"] = None  # null is "keep running"; a missing key is the default
    elif one("lifespan_hours"):
        raw["lifespan_hours"] = one("lifespan_hours")
    if "workspace" in formdata:
        raw["workspace"] = one("workspace") or None
    return raw, problems


def _lines_to_mapping(field_name: str, text: str, problems: list[FieldError]) -> dict[str, str]:
    """Parse the form's NAME=value lines, reporting lines that have no '='."""
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            problems.append(FieldError(field_name, f"line {number} needs the form NAME=value"))
        else:
            mapping[key.strip()] = _unquote(value)
    return mapping


def _unquote(value: str) -> str:
    """A value in double quotes is a JSON string (for newlines: \\n); others are literal."""
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def mapping_to_lines(mapping: Mapping[str, str]) -> str:
    """The inverse of the form's NAME=value text areas: a value with a line break or control
    character, or one that starts with a double quote, is written as a JSON string."""
    return "\n".join(
        f"{key}={json.dumps(value, ensure_ascii=False) if _needs_quotes(value) else value}"
        for key, value in mapping.items()
    )


def _needs_quotes(value: str) -> bool:
    return value.startswith('"') or control_character(value) is not None
