"""Validate an ``environment.yml``: safe YAML, conda's schema, match specs, channel allow-list."""

from __future__ import annotations

import re

import yaml
from packaging.requirements import InvalidRequirement, Requirement

ALLOWED_KEYS = ("name", "channels", "dependencies", "variables")
MAX_DEPENDENCIES = 500
MAX_DEPTH = 16
MAX_TOKENS = 10 * MAX_DEPENDENCIES  # a package line is 2 or 3 YAML tokens
#: libyaml's safe loader when PyYAML has it (linear time), else PyYAML's own.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
          yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
_VERSION = r"[A-Za-z0-9_.*+!-]+"
_OP = r"(?:==|!=|>=|<=|~=|=|>|<)"
_CONSTRAINT = rf"{_OP}?{_VERSION}"
_VERSION_SPEC = rf"{_CONSTRAINT}(?:[,|]{_CONSTRAINT})*"
_BRACKET_VALUE = r"""(?:'[^'\[\]]*'|"[^"\[\]]*"|[^,'"\[\]\s]+)"""
_BRACKET_ITEM = rf"[a-z_]+\s*=\s*{_BRACKET_VALUE}"
_BRACKET = rf"\[\s*{_BRACKET_ITEM}(?:\s*,\s*{_BRACKET_ITEM})*\s*\]"
MATCH_SPEC = re.compile(
    rf"(?:(?P<channel>[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*)::)?"
    rf"(?P<name>{_NAME})"
    rf"(?:\s*(?P<version>{_VERSION_SPEC})(?:\s+(?P<build>[A-Za-z0-9_.*+-]+))?)?"
    rf"(?:\s*{_BRACKET})?"
)
ENV_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_environment_yml(text: str, channels: list[str], max_bytes: int) -> list[str]:
    """Return every problem with an environment.yml (an empty list when it is valid)."""
    if not text.strip():
        return []
    size = len(text.encode())
    if size > max_bytes:
        return [f"the file is {size} bytes; the limit is {max_bytes} bytes"]
    document, problem = _load(text)
    if problem:
        return [problem]
    if not isinstance(document, dict):
        return ["the file must be a YAML mapping with 'channels' and 'dependencies' keys"]
    problems = [
        f"unknown key '{key}'; allowed keys are {', '.join(ALLOWED_KEYS)}"
        for key in document
        if key not in ALLOWED_KEYS
    ]
    name = document.get("name")
    if name is not None and not (isinstance(name, str) and ENV_NAME.fullmatch(name)):
        problems.append("'name' must be letters, digits, '_', '.' or '-' (at most 64)")
    problems += _check_channels(document.get("channels"), channels)
    problems += _check_dependencies(document.get("dependencies"), channels)
    problems += _check_variables(document.get("variables"))
    return problems


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


def _channel_allowed(channel: str, allowed: list[str]) -> bool:
    return channel == "nodefaults" or channel in allowed


def _check_channels(value: object, allowed: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return ["'channels' must be a list of channel names"]
    return [
        f"channel '{c}' is not allowed here; allowed channels: {', '.join(allowed) or 'none'}"
        for c in value
        if not _channel_allowed(c, allowed)
    ]


def _check_dependencies(value: object, allowed: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        return ["'dependencies' must be a list of packages"]
    if len(value) > MAX_DEPENDENCIES:
        return [f"at most {MAX_DEPENDENCIES} dependencies are allowed"]
    problems: list[str] = []
    for item in value:
        if isinstance(item, dict) and list(item) == ["pip"]:
            problems += _check_pip(item["pip"])
        elif isinstance(item, str):
            problems += _check_match_spec(item, allowed)
        else:
            problems.append(f"dependency {item!r} must be a package spec or a 'pip:' list")
    return problems


def _check_match_spec(spec: str, allowed: list[str]) -> list[str]:
    match = MATCH_SPEC.fullmatch(spec.strip())
    if not match:
        return [
            f"'{spec}' is not a conda package spec; write e.g. numpy, numpy>=1.26,<2, "
            "python=3.11.* or bioconda::samtools=1.19"
        ]
    channel = match.group("channel")
    if channel and not _channel_allowed(channel, allowed):
        return [f"'{spec}' uses channel '{channel}', which is not allowed here"]
    return []


def _check_pip(value: object) -> list[str]:
    if not isinstance(value, list):
        return ["'pip' must be a list of requirements"]
    problems: list[str] = []
    for line in value:
        if not isinstance(line, str):
            problems.append(f"pip requirement {line!r} must be text")
        elif line.lstrip().startswith("-"):
            problems.append(f"pip option '{line}' is not allowed; list requirements only")
        else:
            try:
                Requirement(line)
            except InvalidRequirement as error:
                problems.append(f"pip requirement '{line}' is not valid: {error}")
    return problems


def _check_variables(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return ["'variables' must be a mapping of NAME: value"]
    return [
        f"variable name '{name}' must be letters, digits and '_'"
        for name in value
        if not (isinstance(name, str) and VARIABLE_NAME.fullmatch(name))
    ]
