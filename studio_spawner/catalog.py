"""The admin's catalogue and policies: every knob is a documented traitlets setting.

`StudioCatalog` is a mixin of `StudioSpawner`, so each setting is configured as
``c.StudioSpawner.<name>`` (``c.StudioCatalog.<name>`` works too). Entries of the list settings
are checked when they are set, and an error names the setting and the entry.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from traitlets import Bool, Dict, Float, Integer, List, TraitError, Unicode, validate
from traitlets.config import Configurable

from .conda_spec import CondaPolicy
from .lifespan import policy as lifespan_policy
from .pip_spec import PipPolicy
from .validators import (
    AWS_REGION,
    aws_region_error,
    bucket_name_error,
    parse_image,
    registry_allowed,
    registry_pattern_error,
    s3_prefix_error,
)

ENTRY_ID = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
DATA_NAME_MAX = 58  # the pod volume "data-<name>" is a DNS label of at most 63 characters
CLAIM_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
AWS_ACCOUNT = re.compile(r"[0-9]{12}")
LABEL_PREFIX = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
#: Bounds that keep every accepted studio within Kubernetes' object limits (a Secret holds at
#: most 1 MiB; etcd takes requests up to 1.5 MiB).
FILE_MAX_BYTES = 256 * 1024
ENV_MAX_TOTAL_BYTES = 128 * 1024
DEFAULT_RESERVED_LABEL_PREFIXES = (
    "hub.jupyter.org", "studio.jupyter.org", "kubernetes.io", "k8s.io", "x-k8s.io",
    "istio.io", "linkerd.io", "consul.hashicorp.com", "kuma.io",
    "azure.workload.identity", "iam.gke.io", "eks.amazonaws.com",
    "kueue.x-k8s.io", "volcano.sh", "scheduling.x-k8s.io", "yunikorn.apache.org",
    "karpenter.sh", "cluster-autoscaler.kubernetes.io", "jupyter.org",
)
QUANTITY = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:m|k|Ki|M|Mi|G|Gi|T|Ti)?")
KINDS = ("jupyter", "tool")
BASE_PATHS = ("strip", "pass")
TOOL_PORT_VAR = "CONNECT_TOOL_PORT"
# $CONNECT_TOOL_PORT and ${CONNECT_TOOL_PORT} in a catalogue command become Kubernetes'
# $(CONNECT_TOOL_PORT), which the kubelet expands without a shell.
_SHELL_PORT = re.compile(r"\$(?:\{CONNECT_TOOL_PORT\}|CONNECT_TOOL_PORT(?![A-Za-z0-9_]))")
COMMAND_MAX_ARGS = 100
COMMAND_MAX_CHARS = 4096


@dataclass(frozen=True)
class ResourcePreset:
    """CPU, memory and GPU for a studio, chosen by id on the form."""

    id: str
    display_name: str
    description: str = ""
    cpu_guarantee: float | None = None
    cpu_limit: float | None = None
    mem_guarantee: str | None = None
    mem_limit: str | None = None
    gpu: int = 0


@dataclass(frozen=True)
class Template:
    """A template image from the admin's catalogue."""

    id: str
    display_name: str
    image: str
    description: str = ""
    default_url: str = "/lab"
    conda: bool = True
    resources: tuple[str, ...] = ()
    default_resources: str | None = None
    kind: str = "jupyter"
    command: tuple[str, ...] | str | None = None
    base_path: str = "strip"
    port: int | None = None

    @property
    def tool_command(self) -> list[str] | None:
        """The tool's command for Kubernetes (None: the image's own), see `tool_command`."""
        return tool_command(self.command)


def tool_command(command: tuple[str, ...] | list[str] | str | None) -> list[str] | None:
    """A catalogue command as a Kubernetes command list: a string is split like a shell
    would (no expansion), and $CONNECT_TOOL_PORT / ${CONNECT_TOOL_PORT} become
    $(CONNECT_TOOL_PORT)."""
    if command is None:
        return None
    words = shlex.split(command) if isinstance(command, str) else list(command)
    return [_SHELL_PORT.sub(f"$({TOOL_PORT_VAR})", word) for word in words]


def _template_problem(template: Template) -> str | None:
    """'key: message' for the first bad tool field of a template, or None."""
    if template.kind not in KINDS:
        return f"kind: '{template.kind}' is not a kind; use {' or '.join(KINDS)}"
    if template.kind == "jupyter":
        for key in ("command", "port"):
            if getattr(template, key) is not None:
                return f"{key}: only tool templates (kind: tool) take a {key}"
        return None
    if template.base_path not in BASE_PATHS:
        return f"base_path: '{template.base_path}' is not allowed; use strip or pass"
    port = template.port
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        return f"port: {port!r} is not a port number from 1 to 65535"
    if template.command is None:
        return None
    try:
        words = tool_command(template.command)
    except (ValueError, TypeError) as error:
        return f"command: {error}; give a list of words or a shell-quoted string"
    if not words or not all(isinstance(w, str) and w and "\0" not in w for w in words):
        return "command: give one or more non-empty words (a list or a string)"
    if len(words) > COMMAND_MAX_ARGS or sum(map(len, words)) > COMMAND_MAX_CHARS:
        return f"command: at most {COMMAND_MAX_ARGS} words and {COMMAND_MAX_CHARS} characters"
    return None


@dataclass(frozen=True)
class DataRepository:
    """An S3 data repository users can mount at /workspace/data/<name>."""

    name: str
    bucket: str
    description: str = ""
    prefix: str = ""
    region: str = ""
    writable: bool = False
    claim: str = ""
    writable_claim: str = ""


Entry = TypeVar("Entry", ResourcePreset, Template, DataRepository)


def _entry(kind: type[Entry], setting: str, index: int, raw: Any) -> Entry:
    """Build one typed entry from an admin dict, naming the setting in every error."""
    where = f"StudioSpawner.{setting}[{index}]"
    if not isinstance(raw, dict):
        raise TraitError(f"{where}: each entry must be a dict")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TraitError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        entry = kind(**values)
    except TypeError as error:
        raise TraitError(f"{where}: {error}") from None
    key = entry.name if isinstance(entry, DataRepository) else entry.id
    if not isinstance(key, str) or not ENTRY_ID.fullmatch(key):
        raise TraitError(f"{where}: ids and names are lowercase letters, digits and '-' (≤ 63)")
    return entry


def _entries(kind: type[Entry], setting: str, items: list) -> list[Entry]:
    entries = [_entry(kind, setting, i, raw) for i, raw in enumerate(items)]
    keys = [e.name if isinstance(e, DataRepository) else e.id for e in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise TraitError(f"StudioSpawner.{setting}: duplicate ids {duplicates}")
    return entries


class StudioCatalog(Configurable):
    """Templates, resource presets, data repositories and the policies for user options."""

    templates = List(
        Dict(),
        config=True,
        help="""Template images offered on the form. Each entry is a dict with keys
        id, display_name, image, and optional description, default_url (default /lab),
        conda (allow Conda packages, default True), resources (allowed preset ids; empty
        means all), default_resources, and kind: 'jupyter' (default; the image runs
        jupyterhub-singleuser) or 'tool' (any web tool behind the studio-connect proxy, see
        docs/tools.md). Tool templates take command (a list of words or a string; the image's
        own ENTRYPOINT and CMD when missing; $CONNECT_TOOL_PORT is the port to listen on),
        base_path ('strip': the tool serves at /, default; 'pass': it gets the studio's
        URL prefix) and port (default StudioSpawner.connect_tool_port).""",
    )
    resource_presets = List(
        Dict(),
        config=True,
        help="""Resource presets offered on the form: dicts with id, display_name and optional
        description, cpu_guarantee, cpu_limit (cores), mem_guarantee, mem_limit (e.g. 4G) and
        gpu (count of nvidia.com/gpu).""",
    )
    default_resource_preset = Unicode(
        "",
        config=True,
        help="Preset used when neither the user nor the template chooses one ('' = first).",
    )
    data_repositories = List(
        Dict(),
        config=True,
        help="""Data repositories (S3 buckets) users may mount under /workspace/data/<name>:
        dicts with name, bucket and optional description, prefix, region, writable (may users
        mount it read-write; default False), claim (an admin-provisioned read-only
        PersistentVolumeClaim) and writable_claim (its read-write claim).""",
    )
    allow_custom_images = Bool(
        True, config=True, help="Let users type a custom image instead of picking a template."
    )
    allow_custom_tools = Bool(
        False,
        config=True,
        help="""Let users start a custom image as a web tool (kind 'tool'): the image's own
        ENTRYPOINT and CMD run and must listen on $CONNECT_TOOL_PORT (docs/tools.md).""",
    )
    allowed_registries = List(
        Unicode(),
        ["*"],
        config=True,
        help="""Patterns host[:port]/path a custom image must match, host and path separately:
        '*' matches within one host label or one path part (never across '.' in the host or
        '/' in the path), a '**' part matches any number of path parts, e.g. 'quay.io/jupyter/*'
        or '*.dkr.ecr.eu-west-1.amazonaws.com/**'. Hosts are case-insensitive; a pattern
        without a port matches the default port (none or 443). Docker Hub images are matched
        as docker.io/<path> (docker.io/library/<name> for official images). '*' alone allows
        every registry.""",
    )
    custom_image_example = Unicode(
        "quay.io/jupyter/scipy-notebook:2024-07-29",
        config=True,
        help="""The example image reference shown in the form's empty custom image field;
        shown only when allowed_registries admits it ('' shows none).""",
    )
    ecr_allowed_accounts = List(
        Unicode(),
        config=True,
        help="""AWS account ids (12 digits) whose Amazon ECR registries custom images may come
        from; empty allows every account that allowed_registries admits.""",
    )
    ecr_allowed_regions = List(
        Unicode(),
        config=True,
        help="""AWS regions (e.g. eu-west-1) whose Amazon ECR registries custom images may come
        from; empty allows every region that allowed_registries admits.""",
    )
    require_image_digest = Bool(
        False,
        config=True,
        help="""Require custom images to be pinned by digest (image@sha256:...), so a studio
        always runs exactly the image that was checked.""",
    )
    allow_conda_with_custom_image = Bool(
        False,
        config=True,
        help="Allow Conda packages with a custom image (refused by default, as in Seqera).",
    )
    conda_channels = List(
        Unicode(),
        ["conda-forge", "bioconda"],
        config=True,
        help="""Channels an environment.yml may use: names (resolved with conda_channel_alias)
        or URLs. Applies to every way conda names a channel: 'channels', 'channel::pkg',
        labels, full URLs, and the [channel=…] and [url=…] keys.""",
    )
    conda_channel_alias = Unicode(
        "https://conda.anaconda.org/",
        config=True,
        help="""Where channel names point (conda's channel_alias), for the hub's solve and the
        studios' builds (set in pods as CONDA_CHANNEL_ALIAS when changed); e.g. a mirror.""",
    )
    conda_kernel_package = Unicode(
        "ipykernel",
        config=True,
        help="""Added to an environment.yml's dependencies unless it names ipykernel or
        r-irkernel already, so every env a user builds becomes a Jupyter kernel ('' adds
        nothing; the conda_channels must have it).""",
    )
    conda_pip_direct_urls = Bool(
        False,
        config=True,
        help="""Allow pip requirements from direct URLs and version control
        (git+https://…, name @ https://…) in an environment.yml.""",
    )
    environment_yml_example = Unicode(
        "channels:\n  - conda-forge\ndependencies:\n  - numpy>=1.26\n  - pip:\n    - requests\n",
        config=True,
        help="""The example environment.yml shown in the form's empty Conda packages field:
        name packages your conda_channels have, so a user who copies it gets a studio.""",
    )
    environment_yml_max_bytes = Integer(
        65536, min=1, max=FILE_MAX_BYTES, config=True,
        help=f"""Largest environment.yml accepted, in bytes (at most {FILE_MAX_BYTES}: with
        the init script and the start-up program it travels in one Secret, at most 1 MiB).""",
    )
    private_default = Bool(
        False, config=True, help="Whether new studios are private (not shared) by default."
    )
    lifespan_default_hours = Integer(8, min=1, config=True, help="Default lifespan in hours.")
    lifespan_min_hours = Integer(1, min=1, config=True, help="Shortest lifespan in hours.")
    lifespan_max_hours = Integer(120, min=1, config=True, help="Longest lifespan in hours.")
    lifespan_locked = Bool(
        False,
        config=True,
        help="Lock the lifespan at lifespan_default_hours: users see it and cannot change it.",
    )
    allow_keep_running = Bool(
        False, config=True, help="Let users choose 'keep running' (no lifespan limit)."
    )
    lifespan_absolute_max_hours = Integer(
        None,
        min=1,
        allow_none=True,
        config=True,
        help="No studio, not even 'keep running', runs longer than this (None: no limit).",
    )
    lifespan_warning_minutes = Float(
        30, min=0, config=True, help="The studio home and the lifespan service warn this many "
        "minutes before a studio stops."
    )
    lifespan_hour_seconds = Float(
        3600, min=0.001, config=True, help="Seconds in a lifespan hour. Only tests and demos "
        "change it; every lifespan setting in hours scales with it."
    )
    lifespan_group_policies = Dict(
        config=True,
        help="""Per-group lifespan overrides for the lifespan service and the studio home's
        Extend, e.g. {'gpu-users': {'max_hours': 24, 'allow_keep_running': True}}. Keys:
        default_hours, max_hours, allow_keep_running, absolute_max_hours. A user in several
        groups gets the most generous value of each key. The form keeps the base bounds.""",
    )
    protected_env_names = List(
        Unicode(),
        config=True,
        help="""More environment variable names (glob patterns) users may not set, on top of
        JUPYTERHUB_*, JPY_*, STUDIO_*, JUPYTER_IMAGE*, MEM_*, CPU_*, HOME, and the conda and
        pip channel/index settings (CONDA_*, MAMBA_*, RATTLER_*, PIP_INDEX_URL, …).""",
    )
    env_max_count = Integer(
        50, min=0, max=1000, config=True, help="Most environment variables per studio."
    )
    env_value_max_chars = Integer(
        4096, min=1, max=ENV_MAX_TOTAL_BYTES, config=True,
        help="Longest environment variable value, in characters.",
    )
    env_max_total_bytes = Integer(
        65536, min=1, max=ENV_MAX_TOTAL_BYTES, config=True,
        help=f"""Most bytes (UTF-8) of all of a studio's environment variables together, names
        and values (at most {ENV_MAX_TOTAL_BYTES}: they are in the pod twice, in the server's
        container and the conda build step, and a pod is at most about 1.5 MiB).""",
    )
    reserved_label_keys = List(
        Unicode(),
        config=True,
        help="""More label keys users may not set (globs), on top of app, component,
        heritage, release and chart.""",
    )
    reserved_label_prefixes = List(
        Unicode(),
        list(DEFAULT_RESERVED_LABEL_PREFIXES),
        config=True,
        help="""Label key prefixes users may not use: a prefix reserves itself and its
        subdomains (istio.io also reserves sidecar.istio.io/...). The default protects the hub,
        Kubernetes, service meshes, workload identity and batch schedulers; append to it
        rather than replace it.""",
    )
    labels_max_count = Integer(
        20, min=0, max=64, config=True, help="Most resource labels per studio."
    )
    disk_default_gib = Integer(10, min=1, config=True, help="Default home volume size in GiB.")
    disk_min_gib = Integer(1, min=1, config=True, help="Smallest home volume in GiB.")
    disk_max_gib = Integer(100, min=1, config=True, help="Largest home volume in GiB.")
    init_script_max_bytes = Integer(
        16384, min=0, max=FILE_MAX_BYTES, config=True,
        help=f"Largest init script accepted, in bytes (at most {FILE_MAX_BYTES}).",
    )

    BUILTIN_PROTECTED_ENV = (
        "JUPYTERHUB_*", "JPY_*", "STUDIO_*", "JUPYTER_IMAGE*", "MEM_*", "CPU_*", "HOME",
        # conda, mamba, rattler and pip read channels and indexes from these: the build must
        # use the admin's channels (docs/conda.md)
        "CONDA_*", "MAMBA_*", "RATTLER_*", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
        "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_TRUSTED_HOST", "PIP_CONFIG_FILE",
    )
    BUILTIN_RESERVED_LABELS = ("app", "component", "heritage", "release", "chart")

    @validate("templates")
    def _check_templates(self, proposal: dict) -> list:
        for index, entry in enumerate(_entries(Template, "templates", proposal["value"])):
            problem = parse_image(entry.image)
            if isinstance(problem, str):
                raise TraitError(f"StudioSpawner.templates[{index}].image: {problem}")
            tool_problem = _template_problem(entry)
            if tool_problem:
                raise TraitError(f"StudioSpawner.templates[{index}].{tool_problem}")
        return proposal["value"]

    @validate("resource_presets")
    def _check_presets(self, proposal: dict) -> list:
        for index, preset in enumerate(_entries(ResourcePreset, "resource_presets",
                                                proposal["value"])):
            for key in ("mem_guarantee", "mem_limit"):
                value = getattr(preset, key)
                if value is not None and not QUANTITY.fullmatch(str(value)):
                    raise TraitError(
                        f"StudioSpawner.resource_presets[{index}].{key}: '{value}' is not a "
                        "quantity such as 512M or 4G"
                    )
        return proposal["value"]

    @validate("data_repositories")
    def _check_repositories(self, proposal: dict) -> list:
        for index, repository in enumerate(_entries(DataRepository, "data_repositories",
                                                    proposal["value"])):
            problem = _repository_problem(repository)
            if problem:
                raise TraitError(f"StudioSpawner.data_repositories[{index}].{problem}")
        return proposal["value"]

    @validate("lifespan_group_policies")
    def _check_group_policies(self, proposal: dict) -> dict:
        base = self.lifespan_policy()
        for group, overrides in proposal["value"].items():
            try:
                lifespan_policy.group_policy(base, overrides, group)
            except (TypeError, ValueError) as error:
                raise TraitError(f"StudioSpawner.lifespan_group_policies: {error}") from None
        return proposal["value"]

    @validate("reserved_label_prefixes")
    def _check_label_prefixes(self, proposal: dict) -> list:
        return _all_match(proposal["value"], LABEL_PREFIX, "reserved_label_prefixes",
                          "a prefix is a lowercase DNS subdomain such as example.com")

    @validate("allowed_registries")
    def _check_registry_patterns(self, proposal: dict) -> list:
        for index, pattern in enumerate(proposal["value"]):
            if problem := registry_pattern_error(pattern):
                raise TraitError(f"StudioSpawner.allowed_registries[{index}]: '{pattern}': "
                                 f"{problem}")
        return proposal["value"]

    @validate("ecr_allowed_accounts")
    def _check_accounts(self, proposal: dict) -> list:
        return _all_match(proposal["value"], AWS_ACCOUNT, "ecr_allowed_accounts",
                          "an AWS account id is 12 digits")

    @validate("ecr_allowed_regions")
    def _check_regions(self, proposal: dict) -> list:
        return _all_match(proposal["value"], AWS_REGION, "ecr_allowed_regions",
                          "an AWS region looks like eu-west-1")

    def lifespan_policy(self) -> lifespan_policy.Policy:
        """The base lifespan policy: the one the form, the home and the service apply."""
        return lifespan_policy.Policy(
            default_hours=self.lifespan_default_hours,
            min_hours=self.lifespan_min_hours,
            max_hours=self.lifespan_max_hours,
            allow_keep_running=self.allow_keep_running,
            absolute_max_hours=self.lifespan_absolute_max_hours,
        )

    def lifespan_group_policy_entries(self) -> dict[str, lifespan_policy.Policy]:
        base = self.lifespan_policy()
        return {group: lifespan_policy.group_policy(base, overrides, group)
                for group, overrides in self.lifespan_group_policies.items()}

    def template_entries(self) -> dict[str, Template]:
        return {t.id: t for t in _entries(Template, "templates", self.templates)}

    def preset_entries(self) -> dict[str, ResourcePreset]:
        return {p.id: p for p in _entries(ResourcePreset, "resource_presets",
                                          self.resource_presets)}

    def repository_entries(self) -> dict[str, DataRepository]:
        return {r.name: r for r in _entries(DataRepository, "data_repositories",
                                            self.data_repositories)}

    def image_example(self) -> str:
        """custom_image_example when allowed_registries admits it, else ''."""
        image = parse_image(self.custom_image_example) if self.custom_image_example else ""
        return self.custom_image_example if (
            not isinstance(image, str) and registry_allowed(image, self.allowed_registries)
        ) else ""

    def conda_policy(self) -> CondaPolicy:
        """The environment.yml policy: channels, channel alias, pip direct URLs."""
        return CondaPolicy(
            tuple(self.conda_channels),
            self.conda_channel_alias,
            PipPolicy(direct_urls=self.conda_pip_direct_urls),
        )

    def protected_env(self) -> list[str]:
        return [*self.BUILTIN_PROTECTED_ENV, *self.protected_env_names]

    def reserved_labels(self) -> list[str]:
        """Reserved keys (globs) and prefixes (written 'prefix/*')."""
        return [*self.BUILTIN_RESERVED_LABELS, *self.reserved_label_keys,
                *(f"{prefix}/*" for prefix in self.reserved_label_prefixes)]

    def presets_for(self, template: Template | None) -> list[ResourcePreset]:
        """The presets a studio with this template (None: custom image) may choose."""
        presets = self.preset_entries()
        if template and template.resources:
            return [presets[i] for i in template.resources if i in presets]
        return list(presets.values())

    def default_preset(self, template: Template | None) -> str | None:
        """The preset id chosen when the user picks none."""
        allowed = [p.id for p in self.presets_for(template)]
        for candidate in (template and template.default_resources, self.default_resource_preset):
            if candidate and candidate in allowed:
                return candidate
        return allowed[0] if allowed else None


def _repository_problem(repository: DataRepository) -> str | None:
    """'key: message' for the first bad field of a data repository, or None."""
    checks = [
        ("name", None if len(repository.name) <= DATA_NAME_MAX
         else f"at most {DATA_NAME_MAX} characters"),
        ("bucket", bucket_name_error(repository.bucket)),
        ("prefix", s3_prefix_error(repository.prefix)),
        ("region", aws_region_error(repository.region)),
        ("writable", None if isinstance(repository.writable, bool) else "must be true or false"),
    ]
    for key in ("claim", "writable_claim"):
        value = getattr(repository, key)
        if value and not (isinstance(value, str) and CLAIM_NAME.fullmatch(value)):
            checks.append((key, "a claim name is a lowercase DNS subdomain such as data-ro"))
    if repository.writable_claim and not repository.writable:
        checks.append(("writable_claim", "set writable: True too, or remove writable_claim"))
    return next((f"{key}: {problem}" for key, problem in checks if problem), None)


def _all_match(values: list, pattern: re.Pattern[str], setting: str, rule: str) -> list:
    for index, value in enumerate(values):
        if not pattern.fullmatch(value):
            raise TraitError(f"StudioSpawner.{setting}[{index}]: '{value}' is invalid; {rule}")
    return values
