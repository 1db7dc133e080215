"""Container environment and command line, as the kubelet builds them. Pure functions.

Also holds the networking rewrite: every pod shares the host's network namespace on its own
127.0.0.x address, so a listen address of 0.0.0.0 in the environment or arguments (KubeSpawner
passes ``JUPYTERHUB_SERVICE_URL=http://0.0.0.0:8888/...``) is replaced by the pod's IP.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable, Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ANY_ADDRESS = re.compile(r"(?<![\d.])0\.0\.0\.0(?![\d.])")
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


class ConfigError(Exception):
    """A container's configuration cannot be built yet (kubelet: CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, unknown ones kept, `$$` → `$`."""
    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))
    return _REF.sub(sub, text)


def bind_to_pod_ip(text: str, pod_ip: str | None) -> str:
    """Replace a 0.0.0.0 listen address with the pod's IP (see the module docstring)."""
    return ANY_ADDRESS.sub(pod_ip, text) if pod_ip else text


def _field(pod: dict, path: str, pod_ip: str | None, host_ip: str) -> str:
    meta = pod.get("metadata", {})
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    values = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
        "status.podIP": pod_ip or "",
        "status.podIPs": pod_ip or "",
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in values:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return values[path]


def field_value(pod: dict, path: str, pod_ip: str | None, host_ip: str = "127.0.0.1") -> str:
    """The value of a downward-API `fieldRef.fieldPath`."""
    return _field(pod, path, pod_ip, host_ip)


def object_data(obj: dict, kind: str | None = None) -> dict[str, bytes]:
    """A Secret's or ConfigMap's data as bytes."""
    out: dict[str, bytes] = {}
    if (kind or obj.get("kind")) == "Secret":
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value)
        for key, value in (obj.get("stringData") or {}).items():
            out[key] = value.encode()
    else:
        for key, value in (obj.get("data") or {}).items():
            out[key] = value.encode()
        for key, value in (obj.get("binaryData") or {}).items():
            out[key] = base64.b64decode(value)
    return out


def referenced_objects(container: dict) -> set[tuple[str, str]]:
    """The (kind, name) of Secrets/ConfigMaps the container's env refers to."""
    refs: set[tuple[str, str]] = set()
    for item in container.get("env") or []:
        source = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            refs.add(("Secret", source["secretKeyRef"]["name"]))
        if "configMapKeyRef" in source:
            refs.add(("ConfigMap", source["configMapKeyRef"]["name"]))
    for item in container.get("envFrom") or []:
        if "secretRef" in item:
            refs.add(("Secret", item["secretRef"]["name"]))
        if "configMapRef" in item:
            refs.add(("ConfigMap", item["configMapRef"]["name"]))
    return refs


def _key_ref(ref: dict, kind: str, objects: Mapping[tuple[str, str], dict | None]) -> str | None:
    obj = objects.get((kind, ref["name"]))
    label = "secret" if kind == "Secret" else "configmap"
    if obj is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{label} "{ref["name"]}" not found')
    data = object_data(obj, kind)
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
    return data[ref["key"]].decode("utf-8", "replace")


def container_env(
    pod: dict,
    container: dict,
    image_env: Mapping[str, str],
    objects: Mapping[tuple[str, str], dict | None],
    pod_ip: str | None,
    host_ip: str = "127.0.0.1",
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment: runtime defaults, image env, `envFrom`, then `env` (in order,
    with `$(VAR)` expansion), with 0.0.0.0 rewritten to the pod IP."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    env.update(base or {})
    env.update(image_env)
    for item in container.get("envFrom") or []:
        kind, ref = ("Secret", item["secretRef"]) if "secretRef" in item else \
            ("ConfigMap", item.get("configMapRef") or {})
        obj = objects.get((kind, ref.get("name", "")))
        if obj is None:
            if ref.get("optional"):
                continue
            label = "secret" if kind == "Secret" else "configmap"
            raise ConfigError(f'{label} "{ref.get("name")}" not found')
        for key, value in object_data(obj, kind).items():
            env[item.get("prefix", "") + key] = value.decode("utf-8", "replace")
    for item in container.get("env") or []:
        name, source = item["name"], item.get("valueFrom")
        if source is None:
            env[name] = expand(item.get("value", ""), env)
            continue
        if "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            value = _key_ref(source.get("secretKeyRef") or source["configMapKeyRef"], kind,
                             objects)
            if value is not None:
                env[name] = value
        elif "resourceFieldRef" in source:
            env[name] = resource_value(container, source["resourceFieldRef"])
    return {k: bind_to_pod_ip(v, pod_ip) for k, v in env.items()}


def resource_value(container: dict, ref: dict) -> str:
    """`resourceFieldRef`: the limit/request in units of `divisor` (rounded up), or 0."""
    kind, _, res = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(res)
    if value is None:
        return "0"
    divisor = quantity(ref.get("divisor", "1"))
    amount = quantity(str(value))
    return str(max(1, -(-amount // divisor)) if amount else 0)


_SUFFIX = {"m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1024, "Mi": 1024**2,
           "Gi": 1024**3, "Ti": 1024**4}


def quantity(text: str) -> float:
    """Parse a Kubernetes quantity (`500m`, `2Gi`, `1`)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text.strip())
    if not match:
        raise ValueError(f"bad quantity {text!r}")
    return float(match.group(1)) * _SUFFIX.get(match.group(2), 1)


def container_argv(container: dict, image_command: Iterable[str] | None,
                   image_args: Iterable[str] | None, env: Mapping[str, str],
                   pod_ip: str | None) -> list[str]:
    """command + args with Docker's entrypoint/cmd rules and `$(VAR)` expansion."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = list(command) + list(args or [])
    else:
        argv = list(image_command or []) + list(args if args is not None else image_args or [])
    return [bind_to_pod_ip(expand(a, env), pod_ip) for a in argv]


class IpPool:
    """Allocates pod IPs from a loopback range (all of 127.0.0.0/8 reaches `lo` on Linux)."""

    def __init__(self, first: str = "127.0.0.10", last: str = "127.0.0.254",
                 skip: Iterable[str] = ("127.0.0.53",)):
        start, end = int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
        self._free = [str(ipaddress.ip_address(i)) for i in range(start, end + 1)
                      if str(ipaddress.ip_address(i)) not in set(skip)]
        self._owner: dict[str, str] = {}

    def allocate(self, owner: str, preferred: str | None = None) -> str:
        """An address for `owner` (its previous one when given and free)."""
        for ip, who in self._owner.items():
            if who == owner:
                return ip
        if preferred and preferred in self._free:
            self._free.remove(preferred)
        elif self._free:
            preferred = self._free.pop(0)
        else:
            raise RuntimeError("no free pod IP left")
        self._owner[preferred] = owner
        return preferred

    def release(self, owner: str) -> None:
        for ip, who in list(self._owner.items()):
            if who == owner:
                del self._owner[ip]
                self._free.append(ip)

    def in_use(self) -> dict[str, str]:
        return dict(self._owner)
