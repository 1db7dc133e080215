"""Read an ``environment.yml`` as conda does: safe YAML, conda's schema, conda's match-spec
grammar (py-rattler), pip's requirement forms, and the admin's channel and pip policy.

`parse_environment` returns the parsed `CondaEnvironment` and every problem; its `to_yaml()` is
the normalised file the in-pod installers read. `conda env export` output (with build strings
and `prefix:`) and `conda list --export` output are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

import yaml
from rattler import Channel, ChannelConfig, MatchSpec

from .pip_spec import PipPolicy, check_pip_line

ALLOWED_KEYS = ("name", "channels", "dependencies", "variables", "prefix")
MAX_DEPENDENCIES = 500
MAX_PIP_REQUIREMENTS = 200  # pip's parser is the slow part: 200 lines validate in ~25 ms
DEFAULT_CHANNEL_ALIAS = "https://conda.anaconda.org/"
MAX_DEPTH = 16
MAX_TOKENS = 10 * MAX_DEPENDENCIES  # a package line is 2 or 3 YAML tokens
#: libyaml's safe loader when PyYAML has it (linear time), else PyYAML's own.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
          yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)

ENV_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# rattler writes a spec's URL (from `[url=…]` or a package URL) only in its canonical form.
_URL_KEY = re.compile(r'[\[,]url="([^"]*)"')
_LABEL = re.compile(r"/label/[^/]+$")
_PACKAGE_FILE = re.compile(r"/[^/]+/[^/]+\.(?:tar\.bz2|conda)$")
_EXPORT_LINE = re.compile(r"[^\s=]+(?:=[^\s=]+){0,2}")  # name=version=build
_PIP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Packages that make an env a Jupyter kernel (the start-up program's `kernels` step).
KERNEL_PACKAGES = ("ipykernel", "r-irkernel")


@dataclass(frozen=True)
class CondaPolicy:
    """What the admin allows in an environment.yml."""

    channels: tuple[str, ...] = ("conda-forge", "bioconda")
    channel_alias: str = DEFAULT_CHANNEL_ALIAS
    pip: PipPolicy = field(default_factory=PipPolicy)

    def channel_urls(self) -> frozenset[str]:
        return _allowed_keys(self.channels, self.channel_alias)


@dataclass(frozen=True)
class CondaEnvironment:
    """An environment.yml as the installers will read it."""

    name: str | None = None
    channels: tuple[str, ...] = ()
    specs: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    variables: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    rewritten: bool = False  # conda list --export output, or a prefix: installers need to_yaml
    kernel: str = ""  # the kernel package with_kernel added

    def with_kernel(self, package: str) -> CondaEnvironment:
        """This env with `package` (e.g. ipykernel) added, so it becomes a Jupyter kernel;
        unchanged when it has no dependencies or names a kernel package already."""
        if not package or not (self.specs or self.pip):
            return self
        named = {_spec_name(spec) for spec in self.specs}
        named |= {_pip_name(line) for line in self.pip}
        if named & {*KERNEL_PACKAGES, package.lower()}:
            return self
        note = f"{package} was added so that the env becomes a Jupyter kernel"
        return replace(self, specs=(*self.specs, package), notes=(*self.notes, note),
                       kernel=package)

    def to_yaml(self) -> str:
        """The normalised environment.yml (no `prefix:`; export lists become dependencies)."""
        document: dict[str, object] = {}
        if self.name:
            document["name"] = self.name
        document["channels"] = list(self.channels)
        dependencies: list[object] = list(self.specs)
        if self.pip:
            dependencies.append({"pip": list(self.pip)})
        document["dependencies"] = dependencies
        if self.variables:
            document["variables"] = dict(self.variables)
        notes = "".join(f"# note: {note}\n" for note in self.notes)
        return notes + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _spec_name(spec: str) -> str:
    parsed, _ = spec_problem(spec)
    return parsed.name.normalized if parsed is not None and parsed.name else ""


def _pip_name(line: str) -> str:
    found = _PIP_NAME.match(line.strip())
    return found.group().lower().replace("_", "-") if found else ""


def validate_environment_yml(text: str, policy: CondaPolicy, max_bytes: int) -> list[str]:
    """Every problem with an environment.yml (an empty list when it is valid)."""
    return parse_environment(text, policy, max_bytes)[1]


def parse_environment(
    text: str, policy: CondaPolicy, max_bytes: int
) -> tuple[CondaEnvironment | None, list[str]]:
    """The environment and its problems; (None, […]) when the text cannot be read at all."""
    if not text.strip():
        return CondaEnvironment(), []
    size = len(text.encode())
    if size > max_bytes:
        return None, [f"the file is {size} bytes; the limit is {max_bytes} bytes"]
    if text.lstrip().startswith("@EXPLICIT") or "\n@EXPLICIT" in text:
        return None, [
            "explicit package lists (conda list --explicit) are not accepted; paste "
            "`conda env export` or `conda list --export` output instead"
        ]
    document, problem = _load(text)
    if problem:
        return None, [problem]
    if isinstance(document, str) or document is None:
        exported = _export_list(text)
        if exported is not None:
            return _check_document({"dependencies": exported}, policy, rewritten=True)
    if not isinstance(document, dict):
        return None, ["the file must be a YAML mapping with 'channels' and 'dependencies' keys"]
    return _check_document(document, policy, rewritten="prefix" in document)


def _check_document(
    document: dict, policy: CondaPolicy, *, rewritten: bool
) -> tuple[CondaEnvironment | None, list[str]]:
    problems = [
        f"unknown key '{key}'; allowed keys are name, channels, dependencies, variables"
        for key in document
        if key not in ALLOWED_KEYS
    ]
    notes = []
    if document.get("prefix") is not None:
        notes.append(
            "'prefix' is ignored: the environment is built in your studio's "
            "~/.local/envs"
        )
    name = document.get("name")
    if name is not None and not (isinstance(name, str) and ENV_NAME.fullmatch(name)):
        problems.append("'name' must be letters, digits, '_', '.' or '-' (at most 64)")
        name = None
    allowed = policy.channel_urls()
    channels, channel_problems = _check_channels(document.get("channels"), policy, allowed)
    specs, pip, dependency_problems = _check_dependencies(
        document.get("dependencies"), policy, allowed
    )
    variables, variable_problems = _check_variables(document.get("variables"))
    problems += channel_problems + dependency_problems + variable_problems
    environment = CondaEnvironment(
        name if isinstance(name, str) else None,
        channels, specs, pip, variables, tuple(notes), rewritten,
    )
    return environment, problems


def _load(text: str) -> tuple[object, str | None]:
    """safe_load, refusing anchors, aliases and deep nesting: (document, None) or (None, problem).

    The token scan stops at the first problem, before PyYAML recurses (or slows down) on
    deeply nested collections.
    """
    depth = 0
    try:
        for count, token in enumerate(yaml.scan(text, Loader=_LOADER)):
            line = token.start_mark.line + 1
            if count > MAX_TOKENS:
                return None, f"line {line}: too many entries; list at most {MAX_DEPENDENCIES} " \
                             "packages"
            if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
                return None, f"line {line}: YAML anchors and aliases (& and *) are not allowed"
            depth += isinstance(token, _OPENS) - isinstance(token, _CLOSES)
            if depth > MAX_DEPTH:
                return None, f"line {line}: nested more than {MAX_DEPTH} levels deep"
        return yaml.load(text, Loader=_LOADER), None  # noqa: S506 (a safe loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        if _tab_indented(text):
            return None, f"{where}tabs are not allowed for indentation in YAML; indent with spaces"
        problem = getattr(error, "problem", None) or str(error)
        return None, f"{where}not valid YAML ({problem})"


def _tab_indented(text: str) -> bool:
    return any(line.lstrip(" ").startswith("\t") for line in text.splitlines())


def _export_list(text: str) -> list[str] | None:
    """`conda list --export` output (`name=version=build` lines, # comments) as specs."""
    lines = [line.strip() for line in text.splitlines()]
    specs = [line for line in lines if line and not line.startswith("#")]
    if not specs or any(
        not _EXPORT_LINE.fullmatch(spec) or spec_problem(spec)[0] is None for spec in specs
    ):
        return None
    return specs


# --------------------------------------------------------------------------- channels


def _channel_key(url: str) -> str:
    """A channel's identity: its base URL without a trailing '/', a label or a package path."""
    key = url.rstrip("/")
    key = _PACKAGE_FILE.sub("", key)
    return _LABEL.sub("", key).lower()


@lru_cache(maxsize=64)
def _allowed_keys(channels: tuple[str, ...], alias: str) -> frozenset[str]:
    """Allowed channels by base URL: names resolve with the admin's alias and conda's default."""
    keys = set()
    for entry in channels:
        for config in (ChannelConfig(channel_alias=alias), ChannelConfig()):
            try:
                keys.add(_channel_key(Channel(entry, config).base_url))
            except Exception:  # noqa: BLE001 (a bad entry allows nothing)
                continue
    return frozenset(keys)


def _channel_url(name: str) -> str | None:
    try:
        return Channel(name).base_url
    except Exception:  # noqa: BLE001 (rattler's channel errors have no common base)
        return None


def _allowed_list(policy: CondaPolicy) -> str:
    return ", ".join(policy.channels) or "none"


def _check_channels(
    value: object, policy: CondaPolicy, allowed: frozenset[str]
) -> tuple[tuple[str, ...], list[str]]:
    if value is None:
        return (), []
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return (), ["'channels' must be a list of channel names"]
    problems = []
    for channel in value:
        if channel == "nodefaults":
            continue
        url = _channel_url(channel)
        if url is None or _channel_key(url) not in allowed:
            problems.append(
                f"channel '{channel}' is not allowed here; allowed channels: "
                f"{_allowed_list(policy)}"
            )
    return tuple(value), problems


# --------------------------------------------------------------------------- dependencies


def _check_dependencies(
    value: object, policy: CondaPolicy, allowed: frozenset[str]
) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
    if value is None:
        return (), (), []
    if not isinstance(value, list):
        return (), (), ["'dependencies' must be a list of packages"]
    if len(value) > MAX_DEPENDENCIES:
        return (), (), [f"at most {MAX_DEPENDENCIES} dependencies are allowed"]
    specs: list[str] = []
    pip: list[str] = []
    problems: list[str] = []
    for item in value:
        if isinstance(item, dict) and list(item) == ["pip"]:
            lines = item["pip"]
            if not isinstance(lines, list):
                problems.append("'pip' must be a list of requirements")
                continue
            if len(pip) + len(lines) > MAX_PIP_REQUIREMENTS:
                problems.append(f"at most {MAX_PIP_REQUIREMENTS} pip requirements are allowed")
                continue
            for line in lines:
                problem = check_pip_line(line, policy.pip)
                if problem:
                    problems.append(problem)
                else:
                    pip.append(line.strip())
        elif isinstance(item, str):
            problem = check_match_spec(item, policy, allowed)
            if problem:
                problems.append(problem)
            else:
                specs.append(item.strip())
        else:
            problems.append(f"dependency {item!r} must be a package spec or a 'pip:' list")
    return tuple(specs), tuple(pip), problems


def _first_line(text: str) -> str | None:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line or None


def spec_problem(spec: str) -> tuple[MatchSpec | None, str | None]:
    """(MatchSpec, None), or (None, conda's own reason the spec is not valid)."""
    try:
        return MatchSpec(spec), None
    except Exception as error:  # noqa: BLE001 (rattler raises several error types)
        return None, _first_line(str(error)) or "not valid"


def check_match_spec(spec: str, policy: CondaPolicy, allowed: frozenset[str]) -> str | None:
    """Why a conda match spec is refused (grammar or channel policy), or None."""
    stripped = spec.strip()
    if not stripped:
        return "a dependency is empty; remove the line"
    parsed, reason = spec_problem(stripped)
    if parsed is None:
        return (
            f"'{stripped}' is not a conda package spec ({reason}); write e.g. numpy, "
            "numpy>=1.26,<2, python=3.11.*, numpy=1.26.4=py311h64a7726_0 or "
            "bioconda::samtools=1.19"
        )
    for url in _spec_channel_urls(parsed):
        if _channel_key(url) not in allowed:
            return (
                f"'{stripped}' names the channel {url.rstrip('/')}, which is not allowed "
                f"here; allowed channels: {_allowed_list(policy)}"
            )
    return None


def _spec_channel_urls(spec: MatchSpec) -> list[str]:
    """Every channel a spec names: `channel::`, `[channel=…]`, `[url=…]`, a package URL."""
    urls = []
    if spec.channel is not None:
        urls.append(spec.channel.base_url)
    urls += _URL_KEY.findall(spec.to_canonical_string())
    return urls


# --------------------------------------------------------------------------- variables


def _check_variables(value: object) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    if value is None:
        return (), []
    if not isinstance(value, dict):
        return (), ["'variables' must be a mapping of NAME: value"]
    problems = [
        f"variable name '{name}' must be letters, digits and '_'"
        for name in value
        if not (isinstance(name, str) and VARIABLE_NAME.fullmatch(name))
    ]
    return tuple((str(k), str(v)) for k, v in value.items()), problems
