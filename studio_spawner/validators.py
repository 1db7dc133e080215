"""Grammars for the values users type: image references, labels, env names, scripts.

Every check here is a full match: a value is valid only if all of it fits the grammar.
Each function returns an error message (a sentence that says how to fix it) or None.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass

# --- container image references (the grammar of the distribution/reference package) ---------

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

IMAGE_REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
DEFAULT_REGISTRY = "docker.io"
_MAX_IMAGE_NAME = 255
_MAX_REFERENCE = _MAX_IMAGE_NAME + 1 + 128 + 1 + 200  # name:tag@digest


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference; `registry` is normalised (docker.io when omitted).

    `host` is the registry's host in lowercase (host names are case-insensitive) and `port`
    its port, None for the default (443 is the default too).
    """

    registry: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def host(self) -> str:
        host, _ = _split_port(self.registry)
        return host.lower()

    @property
    def port(self) -> str | None:
        _, port = _split_port(self.registry)
        return _normal_port(port)

    @property
    def repository(self) -> str:
        """host[:port]/path, normalised: what allowed-registry patterns are matched against."""
        return f"{self.host}{':' + self.port if self.port else ''}/{self.path}"


HTTPS_PORT = "443"


def _normal_port(port: str | None) -> str | None:
    """None for the default port (none or 443), else the port without leading zeros."""
    return None if port is None or int(port) == int(HTTPS_PORT) else str(int(port))


def _split_port(registry: str) -> tuple[str, str | None]:
    host, colon, port = registry.rpartition(":")
    if colon and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host, port
    return registry, None


def parse_image(reference: str) -> ImageReference | str:
    """Parse an image reference, or return a message saying what is wrong with it."""
    if len(reference) > _MAX_REFERENCE:
        return f"an image reference has at most {_MAX_REFERENCE} characters"
    if reference != reference.strip() or any(ch.isspace() for ch in reference):
        return "an image reference cannot contain spaces"
    if not reference:
        return "enter an image reference such as quay.io/jupyter/scipy-notebook:2024-07-29"
    match = IMAGE_REFERENCE.fullmatch(reference)
    domain = match and match.group("domain")
    # The first component is a registry only if it looks like a host (distribution's rule).
    if match and domain and not ("." in domain or ":" in domain or domain == "localhost"):
        if domain != domain.lower():
            match = None
        else:
            return parse_image(f"{DEFAULT_REGISTRY}/{reference}")
    if not match:
        if reference != reference.lower() and IMAGE_REFERENCE.fullmatch(reference.lower()):
            return "repository names must be lowercase (the registry host and tag may not be)"
        return (
            "not a valid image reference; use [registry[:port]/]path[:tag][@sha256:digest], "
            "for example quay.io/jupyter/scipy-notebook:2024-07-29"
        )
    registry = domain or DEFAULT_REGISTRY
    path = match.group("path")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if len(f"{domain + '/' if domain else ''}{match.group('path')}") > _MAX_IMAGE_NAME:
        return f"the image name is longer than {_MAX_IMAGE_NAME} characters"
    digest = match.group("digest")
    if digest and digest.startswith("sha256:") and len(digest) != len("sha256:") + 64:
        return "a sha256 digest has exactly 64 hexadecimal characters"
    return ImageReference(registry, path, match.group("tag"), digest)


# --- allowed registries: host[:port]/path patterns -------------------------------------------

_HOST_PATTERN = re.compile(
    r"(?:[a-z0-9*](?:[a-z0-9*.-]*[a-z0-9*])?|\[[a-f0-9:]+\])(?::[0-9]{1,5})?"
)
_PATH_PATTERN = re.compile(r"(?:\*\*|[a-z0-9._*-]+)(?:/(?:\*\*|[a-z0-9._*-]+))*")
REGISTRY_PATTERN_RULE = (
    "a pattern is host[:port]/path, e.g. quay.io/jupyter/* or *.dkr.ecr.eu-west-1.amazonaws.com/**:"
    " '*' matches within one host label or one path part, '**' any number of path parts; "
    "'*' alone allows every registry"
)


def registry_pattern_error(pattern: str) -> str | None:
    """Check an allowed-registries pattern (see REGISTRY_PATTERN_RULE)."""
    if pattern == "*":
        return None
    host, slash, path = pattern.partition("/")
    if not slash or not _HOST_PATTERN.fullmatch(host.lower()) or not _PATH_PATTERN.fullmatch(path):
        return REGISTRY_PATTERN_RULE
    return None


def _glob(pattern: str, within: str) -> str:
    """A regex for a glob: `*` matches no character of `within`; a `**` part any path parts."""
    star = f"[^{re.escape(within)}]*"
    return "/".join(
        "[^/]+(?:/[^/]+)*" if part == "**" else star.join(map(re.escape, part.split("*")))
        for part in pattern.split("/")
    )


def registry_allowed(image: ImageReference, patterns: list[str]) -> bool:
    """True when one pattern matches the image's host, port and path (each separately).

    `*` never crosses a '.' in the host nor a '/' in the path; a pattern without a port
    matches the default port (none or 443) only.
    """
    return any(_pattern_matches(image, pattern) for pattern in patterns)


def _pattern_matches(image: ImageReference, pattern: str) -> bool:
    if pattern == "*":
        return True
    if registry_pattern_error(pattern):
        return False
    host_pattern, _, path_pattern = pattern.partition("/")
    host, port = _split_port(host_pattern.lower())
    return (
        _normal_port(port) == image.port
        and re.fullmatch(_glob(host, ".:"), image.host) is not None
        and re.fullmatch(_glob(path_pattern, "/"), image.path) is not None
    )


# --- Kubernetes labels ------------------------------------------------------------------------

_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")


def label_key_error(key: str, reserved: list[str]) -> str | None:
    """Check a label key: ``[prefix/]name``; reserved keys and prefixes are refused."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "a label key cannot start with '/'"
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return (
            "the label prefix must be a lowercase DNS subdomain of at most 253 characters, "
            "such as example.com"
        )
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            "a label name is 1-63 characters: letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    if any(_reserved_match(key, prefix, pattern) for pattern in reserved):
        return "this label key is reserved for the hub and Kubernetes; choose another key"
    return None


def _reserved_match(key: str, prefix: str, pattern: str) -> bool:
    if pattern.endswith("/*"):
        reserved_prefix = pattern[:-2]
        return prefix == reserved_prefix or prefix.endswith("." + reserved_prefix)
    return fnmatch.fnmatchcase(key, pattern)


def label_value_error(value: str) -> str | None:
    """Check a label value: empty, or 1-63 characters of the label-name alphabet."""
    if value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value)):
        return None
    return (
        "a label value is at most 63 characters: letters, digits, '-', '_' and '.', "
        "starting and ending with a letter or digit"
    )


# --- environment variables and text -------------------------------------------------------------

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name_error(name: str, protected: list[str]) -> str | None:
    """Check an environment variable name and refuse the protected ones."""
    if not ENV_NAME.fullmatch(name) or len(name) > 255:
        return "a variable name has letters, digits and '_' and does not start with a digit"
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in protected):
        return "this variable is set by the hub and cannot be changed; use another name"
    return None


def control_character(text: str, allowed: str = "") -> str | None:
    """Return the first control character in text (other than `allowed`), if any."""
    found = _controls(allowed).search(text)
    return repr(found.group()) if found else None


@functools.lru_cache(maxsize=16)
def _controls(allowed: str) -> re.Pattern[str]:
    controls = "".join(chr(c) for c in [*range(32), 127] if chr(c) not in allowed)
    return re.compile(f"[{re.escape(controls)}]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_error(text: str, allowed: str = "") -> str | None:
    """Why text cannot be stored and passed on: a control character or a lone surrogate."""
    if surrogate := _SURROGATE.search(text):
        return (f"contains {surrogate.group()!r}, half of a UTF-16 pair that is not a "
                "character; remove it")
    if bad := control_character(text, allowed):
        return f"contains the control character {bad}; remove it"
    return None


# --- Amazon S3 and ECR --------------------------------------------------------------------------

_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9.-]{1,61})[a-z0-9]")
_IPV4_LIKE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
AWS_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
_PREFIX_PART = re.compile(r"[A-Za-z0-9!_.*'()=+,@-]+")
ECR_REGISTRY = re.compile(
    r"(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2})"
    r"\.amazonaws\.com(?:\.cn)?"
)


def bucket_name_error(name: str) -> str | None:
    """Check an S3 bucket name (general purpose buckets' naming rules)."""
    if not isinstance(name, str) or not _BUCKET.fullmatch(name):
        return (
            "a bucket name is 3-63 characters: lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name or _IPV4_LIKE.fullmatch(name):
        return "a bucket name cannot contain '..', '.-' or '-.', nor look like an IP address"
    return None


def s3_prefix_error(prefix: str) -> str | None:
    """Check a key prefix mounted as a directory: ``part/part/``, no '.' or '..' parts."""
    if prefix == "":
        return None
    if (
        not isinstance(prefix, str)
        or not prefix.endswith("/")
        or len(prefix) > 512
        or any(p in (".", "..") or not _PREFIX_PART.fullmatch(p) for p in prefix.split("/")[:-1])
    ):
        return (
            "a prefix is one or more path parts each ending in '/', such as 'projects/rna/' "
            "(letters, digits and !_.*'()=+,@-; no '.' or '..' parts, no leading '/')"
        )
    return None


def aws_region_error(region: str) -> str | None:
    """Check an AWS region name such as eu-west-1; '' means the hub's default region."""
    if region == "" or (isinstance(region, str) and AWS_REGION.fullmatch(region)):
        return None
    return "an AWS region looks like eu-west-1 or us-gov-west-1"
