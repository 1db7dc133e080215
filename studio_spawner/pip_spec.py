"""The `pip:` lines of an environment.yml: PEP 508 requirements plus the forms pip takes in a
requirements file (bare VCS and archive URLs), under the admin's direct-URL policy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement

MAX_LINE = 2000
URL_SCHEMES = ("https", "git+https", "git+ssh", "hg+https", "svn+https", "bzr+https")
_COMMENT = re.compile(r"(?:^|\s)#")
_URL_LINE = re.compile(r"[a-z][a-z0-9+.-]*://\S*|file:\S*")
_SINGLE_EQUALS = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9_.,\s-]*\])?)\s*=\s*([^=<>!~\s][^;]*)(;.*)?"
)
_EDITABLE = ("-e", "--editable")
_FILES = ("-r", "--requirement", "-c", "--constraint")
_INDEX = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index",
          "--trusted-host", "--pre")


@dataclass(frozen=True)
class PipPolicy:
    """The admin's pip policy: whether direct URLs and VCS requirements are allowed."""

    direct_urls: bool = False


def check_pip_line(line: object, policy: PipPolicy) -> str | None:
    """Why one `pip:` line is refused, with the fix, or None when pip will take it."""
    if not isinstance(line, str):
        return f"pip requirement {line!r} must be text"
    if len(line) > MAX_LINE:
        return f"a pip requirement is longer than {MAX_LINE} characters"
    text = line.strip() if _URL_LINE.match(line.strip()) else _without_comment(line)
    if not text:
        return "a pip requirement is empty; remove the line"
    if text.startswith("-"):
        return _option_problem(text)
    if text.startswith((".", "/", "~")):
        return f"pip requirement '{text}': local paths do not exist where the studio is built"
    if _URL_LINE.fullmatch(text):
        return _url_problem(text, text, policy)
    if " --" in text:
        return f"pip requirement '{text}': per-requirement options (--hash, …) are not supported"
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        hint = _single_equals_hint(text)
        if hint:
            return f"pip requirement '{text}': pip uses ==: write `{hint}`"
        return f"pip requirement '{text}' is not valid: {_first_line(str(error))}"
    if requirement.url:
        return _url_problem(text, requirement.url, policy)
    return None


def _without_comment(line: str) -> str:
    """pip's rule: `#` at the start or after whitespace starts a comment."""
    match = _COMMENT.search(line)
    return (line[: match.start()] if match else line).strip()


def _single_equals_hint(text: str) -> str | None:
    """`name=1.0` (conda's form) as pip writes it, `name==1.0`."""
    match = _SINGLE_EQUALS.fullmatch(text)
    if not match:
        return None
    name, version, marker = match.groups()
    fixed = f"{name}=={version.strip()}" + (f"; {marker[1:].strip()}" if marker else "")
    try:
        Requirement(fixed)
    except InvalidRequirement:
        return None
    return fixed


def _option_problem(text: str) -> str:
    option = re.split(r"[\s=]", text, maxsplit=1)[0]
    if option in _EDITABLE:
        return (
            f"pip line '{text}': editable installs (-e) need a local checkout, which the "
            "studio build does not have; list the package, e.g. name==1.0"
        )
    if option in _FILES:
        return (
            f"pip line '{text}': {option} refers to a file the studio build cannot see; "
            "list the requirements here, one per line"
        )
    if option in _INDEX:
        return (
            f"pip line '{text}': package indexes are set by the administrator, not in "
            "environment.yml; remove the line"
        )
    return f"pip option '{text}' is not allowed; list requirements only"


def _url_problem(text: str, url: str, policy: PipPolicy) -> str | None:
    if not policy.direct_urls:
        return (
            f"pip requirement '{text}': direct URLs and VCS requirements (git+https://…, "
            "name @ url) are turned off here; use a released version, e.g. name==1.0"
        )
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES or not parts.netloc or any(c.isspace() for c in url):
        return (
            f"pip requirement '{text}': the URL must start with one of "
            f"{', '.join(s + '://' for s in URL_SCHEMES)} and name a host"
        )
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "not valid"
