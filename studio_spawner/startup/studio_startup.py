#!/usr/bin/env python3
"""Studio start-up program: runs inside the user's image, before the notebook server.

Standard library only, Python 3.8+. Invoked as ``sh studio_startup.sh <step>`` with one of:

- ``sync-envs``: make every conda env of the image a user-owned copy under ``~/.local/envs``;
- ``user-env``: build the user's env from ``$STUDIO_FILES/environment.yml``;
- ``kernels``: register a Jupyter kernel for every env that can run one;
- ``run -- CMD ARGS...``: run ``$STUDIO_FILES/init.sh``, then exec the command.

See docs/startup.md for the design (fingerprints, state files, crash safety).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # subprocess and shutil are imported where used: restarts stay light
    import subprocess

STATE_VERSION = 1
SYNC_STATE = ".studio-sync.json"
USER_ENV_STATE = ".studio-user-env.json"
TMP_PREFIX = ".studio-tmp-"
OLD_PREFIX = ".studio-old-"
KERNEL_PREFIX = "studio-"
SHEBANG_MAX = 127
ENTRY_POINT_TYPES = ("unix_python_entry_point", "python_entry_point")
LOG_MAX_BYTES = 1 << 20
INSTALLERS = ("studio-conda-install", "mamba", "micromamba", "conda")
LOCK_INSTALLER = "studio-conda-install"  # reads the hub's lock (images/notebook/)
LOCK_FILE = "environment.lock"


class StepError(Exception):
    """A step failed; the message is shown to the user as one paragraph."""


# --------------------------------------------------------------------------- configuration


class Config:
    """Settings read from the environment (see docs/architecture.md, "The pod")."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.home = environ.get("HOME") or os.path.expanduser("~")
        self.files = environ.get("STUDIO_FILES") or "/etc/studio"
        dirs = environ.get("STUDIO_IMAGE_ENV_DIRS") or "/opt/conda/envs"
        self.image_env_dirs = [d for d in dirs.split(":") if d]
        self.installer = environ.get("STUDIO_INSTALLER", "").strip()
        self.init_timeout = _parse_timeout(environ.get("STUDIO_INIT_TIMEOUT") or "600")
        self.user_env = environ.get("STUDIO_USER_ENV") or "studio"
        self.envs_dir = os.path.join(self.home, ".local", "envs")
        self.state_dir = os.path.join(self.home, ".local", "state", "studio")
        self.kernels_dir = os.path.join(self.home, ".local", "share", "jupyter", "kernels")


def _parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise StepError(f"STUDIO_INIT_TIMEOUT must be a number of seconds, not {text!r}.") from None
    return value if value > 0 else 600.0


# --------------------------------------------------------------------------- logging


class StepLog:
    """Appends to ``<state>/<step>.log``; ``say`` also prints a short line to stdout."""

    def __init__(self, state_dir: str, step: str) -> None:
        notes: list[str] = []
        try:
            if not state_dir:
                raise OSError("no usable home")
            state_dir = own_dir(state_dir, notes)
        except OSError as e:  # never fail a start for want of a log
            import tempfile

            notes.append(f"cannot use {state_dir} ({e}); logging to a temporary directory")
            state_dir = tempfile.mkdtemp(prefix="studio-state-")
        self.path = os.path.join(state_dir, step + ".log")
        _rotate(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives for the step)
        self.step = step
        self.write(f"=== {step} started {_now()} (pid {os.getpid()})")
        for note in notes:
            self.say(note)

    def write(self, message: str) -> None:
        """Log only to the file."""
        self._file.write(f"[{_now()}] {message}\n")
        self._file.flush()

    def say(self, message: str) -> None:
        """Log to the file and print to stdout."""
        self.write(message)
        print(f"studio {self.step}: {message}", flush=True)

    def close(self) -> None:
        self._file.close()


def own_dir(path: str, notes: list[str]) -> str:
    """Make sure `path` (a directory the start-up program owns) is a directory: a file or a
    symlink in its place is moved aside (and noted), never followed or deleted."""
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isdir(path)):
        aside = f"{path}.not-a-directory-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(path, aside)
        notes.append(f"{path} was not a directory: moved it to {aside}")
    os.makedirs(path, exist_ok=True)
    return path


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _rotate(path: str) -> None:
    try:
        if os.path.getsize(path) > LOG_MAX_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass


def _pause_point(point: str) -> None:
    """Test hook: stop here (sleep) when STUDIO_TEST_PAUSE_AT names this point."""
    if os.environ.get("STUDIO_TEST_PAUSE_AT") == point:
        print(f"studio-test-paused {point}", file=sys.stderr, flush=True)
        time.sleep(3600)


# --------------------------------------------------------------------------- small file helpers


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: str, value: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _remove_ours(path: str) -> None:
    """Delete a temp/old dir of ours; refuses any other name (user data is never removed)."""
    import shutil

    base = os.path.basename(path)
    if not (base.startswith(TMP_PREFIX) or base.startswith(OLD_PREFIX)):
        raise RuntimeError(f"refusing to delete {path}: not a studio temp dir")

    def make_writable_and_retry(func: Callable, failed: str, _exc: object) -> None:
        try:  # read-only dirs copied from the image: allow deleting their entries
            os.chmod(os.path.dirname(failed), 0o700)
            func(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def _add_user_write(path: str) -> int | None:
    """Make ``path`` writable by its owner; returns the mode to restore (None: unchanged)."""
    mode = os.lstat(path).st_mode & 0o7777
    if mode & 0o200:
        return None
    os.chmod(path, mode | 0o200)
    return mode


def _flush_to_disk(path: str) -> None:
    """Flush the filesystem holding ``path`` (syncfs when available, else sync)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (ImportError, OSError, AttributeError):
        pass
    os.sync()


# --------------------------------------------------------------------------- fingerprints


def _listdir(path: str) -> list[str]:
    """Sorted entries of a directory; empty when it is missing or unreadable."""
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _site_packages_dirs(prefix: str) -> list[str]:
    lib = os.path.join(prefix, "lib")
    dirs = [os.path.join(lib, d, "site-packages") for d in _listdir(lib) if d.startswith("python")]
    return [d for d in dirs if os.path.isdir(d)]


def _pip_entries(prefix: str) -> list[str]:
    """Names of installed-distribution markers in site-packages (what pip adds/removes)."""
    names = []
    for sp in _site_packages_dirs(prefix):
        try:
            entries = os.listdir(sp)
        except OSError:
            continue
        marks = (".dist-info", ".egg-info", ".egg-link", ".pth")
        names.extend(
            f"{os.path.basename(os.path.dirname(sp))}/{e}" for e in entries if e.endswith(marks)
        )
    return sorted(names)


def _conda_meta_entries(prefix: str) -> list[str]:
    """``name size mtime`` of every file in conda-meta (what conda/mamba write on change)."""
    meta = os.path.join(prefix, "conda-meta")
    lines = []
    try:
        with os.scandir(meta) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                lines.append(f"{entry.name} {st.st_size} {st.st_mtime_ns}")
    except OSError:
        return []
    return sorted(lines)


def env_fingerprint(prefix: str) -> str:
    """Cheap fingerprint of an env: conda-meta names/sizes/mtimes and pip dist-info names."""
    text = "\n".join(["conda-meta"] + _conda_meta_entries(prefix) + ["pip"] + _pip_entries(prefix))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- relocation


class Relocator:
    """Rewrite an env copied from ``old`` so it works at ``new`` (the conda-unpack method)."""

    def __init__(self, root: str, old: str, new: str) -> None:
        self.root = root
        self.old = old.encode()
        self.new = new.encode()
        self.pattern = re.compile(re.escape(self.old) + rb"(?![A-Za-z0-9_.\-])")
        self.binary_pattern = re.compile(re.escape(self.old) + rb"(?![A-Za-z0-9_.\-])[^\0]*\0+")
        self.changed: dict[str, str] = {}
        self.skipped_binary: list[str] = []
        self.unsafe: list[str] = []  # conda-meta paths outside the env: never touched
        self.real_root = os.path.realpath(root)

    def run(self) -> None:
        """Relocate files listed in conda-meta, scripts in bin/, and conda-meta itself."""
        records = self._load_records()
        seen = set()
        for _, record in records:
            for entry in _paths_of(record):
                seen.add(entry["_path"])
                self._relocate_entry(entry)
            _pause_point("relocating")
        self._relocate_bin_extras(seen)
        self._fix_conda_meta(records)

    def _load_records(self) -> list[tuple[str, dict]]:
        meta = os.path.join(self.root, "conda-meta")
        records = []
        for name in _listdir(meta):
            path = self._inside(f"conda-meta/{name}")
            record = _read_json(path) if path and name.endswith(".json") else None
            if record is not None:
                records.append((path, record))
        return records

    def _inside(self, rel: str) -> str | None:
        """root/rel when it stays in the env: no absolute path, no '..', no symlinked
        directory on the way; otherwise None (and the path is reported once)."""
        parts = rel.split("/")
        path = os.path.join(self.root, rel)
        parent = os.path.realpath(os.path.dirname(path))
        if (
            os.path.isabs(rel)
            or ".." in parts
            or not (parent == self.real_root or parent.startswith(self.real_root + os.sep))
        ):
            if rel not in self.unsafe:
                self.unsafe.append(rel)
            return None
        return path

    def _relocate_entry(self, entry: dict) -> None:
        rel = entry["_path"]
        path = self._inside(rel)
        if path is None:
            return
        placeholder = entry.get("prefix_placeholder")
        if entry.get("path_type") == "softlink" or os.path.islink(path):
            self._relocate_symlink(path)
        elif isinstance(placeholder, str) and placeholder and entry.get("file_mode") == "binary":
            self._relocate_binary(rel, len(placeholder.encode()))
        elif placeholder or entry.get("path_type") in ENTRY_POINT_TYPES:
            self._relocate_text(rel)

    def _relocate_bin_extras(self, seen: set) -> None:
        """pip-installed scripts and symlinks in bin/ are not in conda-meta: check shebangs."""
        bindir = os.path.join(self.root, "bin")
        names = _listdir(bindir)
        for name in names:
            rel = "bin/" + name
            path = self._inside(rel)
            if rel in seen or path is None:
                continue
            if os.path.islink(path):
                self._relocate_symlink(path)
            elif os.path.isfile(path) and self._has_prefix_shebang(path):
                self._relocate_text(rel)

    def _has_prefix_shebang(self, path: str) -> bool:
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError:
            return False
        return head.startswith(b"#!") and self.old in head.split(b"\n", 1)[0]

    def _relocate_symlink(self, path: str) -> None:
        try:
            target = os.readlink(path)
        except OSError:
            return
        old = self.old.decode()
        if target == old or target.startswith(old + "/"):
            parent = os.path.dirname(path)
            restore = _add_user_write(parent)
            os.unlink(path)
            os.symlink(self.new.decode() + target[len(old) :], path)
            if restore is not None:
                os.chmod(parent, restore)

    def _relocate_text(self, rel: str) -> None:
        """Replace the prefix, streaming through a temp file (memory stays bounded)."""
        path = self._inside(rel)
        if path is None or not _is_regular(path):
            return
        tmp = path + ".studio-tmp"
        digest, changed, head = hashlib.sha256(), False, b""
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            carry = b""
            while True:
                chunk = src.read(CHUNK)
                buf = carry + chunk
                # A match may start in the last len(old) bytes and needs the byte after it.
                cut = len(buf) - len(self.old) if chunk else len(buf)
                out, done = _sub_before(self.pattern, self.new, buf, cut)
                changed = changed or out != buf[:done]
                carry = buf[done:]
                if head is not None:  # hold output back until the first line is whole
                    head += out
                    if b"\n" not in head and chunk and len(head) < CHUNK:
                        continue
                    out, head = _fix_long_shebang(head), None
                dst.write(out)
                digest.update(out)
                if not chunk:
                    break
        if not changed:
            os.unlink(tmp)
            return
        os.chmod(tmp, os.lstat(path).st_mode & 0o7777)
        parent = os.path.dirname(path)
        restore = _add_user_write(parent)
        os.replace(tmp, path)
        if restore is not None:
            os.chmod(parent, restore)
        self.changed[rel] = digest.hexdigest()

    def _relocate_binary(self, rel: str, placeholder_len: int) -> None:
        """Replace the prefix in NUL-padded C strings, in place and in chunks (same length)."""
        path = self._inside(rel)
        if path is None or not _is_regular(path) or not _contains(path, self.old):
            return
        if len(self.new) > placeholder_len:
            self.skipped_binary.append(rel)
            return
        digest = hashlib.sha256()
        restore = _add_user_write(path)
        try:
            with open(path, "r+b") as f:
                start, carry = 0, b""
                while True:
                    chunk = f.read(CHUNK)
                    buf = carry + chunk
                    # Only whole C strings: up to the end of the last run of NULs in the buffer.
                    done = len(buf) if not chunk else _after_last_nul_run(buf)
                    if done == 0 and len(buf) > MAX_CARRY:
                        done = len(buf)  # no C string is this long: leave it as it is
                    out = self.binary_pattern.sub(
                        lambda m: self._pad(m.group(), placeholder_len), buf[:done])
                    if out != buf[:done]:
                        f.seek(start)
                        f.write(out)
                        f.seek(start + len(buf))
                    digest.update(out)
                    start, carry = start + done, buf[done:]
                    if not chunk:
                        break
        finally:
            if restore is not None:
                os.chmod(path, restore)
        self.changed[rel] = digest.hexdigest()

    def _pad(self, chunk: bytes, placeholder_len: int) -> bytes:
        """Replace the prefix in one C string, keeping its length by NUL padding."""
        text = chunk.rstrip(b"\0")
        nuls = len(chunk) - len(text)
        count = len(self.pattern.findall(text))
        extent = len(text) + 1 + count * (placeholder_len - len(self.old))
        out = self.pattern.sub(self.new.replace(b"\\", b"\\\\"), text)
        if extent > len(chunk) or len(out) + 1 > extent:
            return chunk  # not a padded conda placeholder: leave it alone
        return out + b"\0" * (extent - len(out)) + b"\0" * (nuls - (extent - len(text)))

    def _fix_conda_meta(self, records: list[tuple[str, dict]]) -> None:
        """Update sha256_in_prefix of rewritten files and the prefix in conda-meta text."""
        for path, record in records:
            touched = False
            for entry in _paths_of(record):
                digest = self.changed.get(entry["_path"])
                if digest and entry.get("sha256_in_prefix", digest) != digest:
                    entry["sha256_in_prefix"] = digest
                    touched = True
            text = json.dumps(record, indent=2)
            if self.old.decode() in text:
                text = self.pattern.sub(self.new.replace(b"\\", b"\\\\"), text.encode()).decode()
                touched = True
            if touched:
                _replace_text(path, text + "\n")
        history = self._inside("conda-meta/history")
        data = _read_regular(history) if history else None
        if data and self.old in data:
            with open(history, "wb") as f:
                f.write(self.pattern.sub(self.new.replace(b"\\", b"\\\\"), data))


def _paths_of(record: dict) -> list[dict]:
    """The path entries of a conda-meta record; malformed parts are skipped."""
    paths_data = record.get("paths_data")
    paths = paths_data.get("paths") if isinstance(paths_data, dict) else None
    if not isinstance(paths, list):
        return []
    return [p for p in paths if isinstance(p, dict) and isinstance(p.get("_path"), str)]


CHUNK = 1 << 20
MAX_CARRY = 8 << 20


def _is_regular(path: str) -> bool:
    return not os.path.islink(path) and os.path.isfile(path)


def _read_regular(path: str) -> bytes | None:
    if not _is_regular(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def _contains(path: str, needle: bytes) -> bool:
    """Whether a file contains `needle`, read in chunks."""
    with open(path, "rb") as f:
        tail = b""
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return False
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle):]


def _sub_before(pattern: re.Pattern, new: bytes, buf: bytes, cut: int) -> tuple[bytes, int]:
    """Replace the matches that start before `cut`; (output, how much of buf it covers)."""
    out, pos = [], 0
    for match in pattern.finditer(buf):
        if match.start() >= cut:
            break
        out += [buf[pos:match.start()], new]
        pos = match.end()
    done = max(pos, cut)
    out.append(buf[pos:done])
    return b"".join(out), done


def _after_last_nul_run(buf: bytes) -> int:
    """The index just after the last run of NUL bytes that ends before the end of buf."""
    end = len(buf)
    while end and buf[end - 1] == 0:  # a run touching the end may go on: not this one
        end -= 1
    last = buf.rfind(b"\0", 0, end)
    return last + 1 if last >= 0 else 0


def _replace_text(path: str, text: str) -> None:
    st = os.stat(path)
    tmp = path + ".studio-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


SHEBANG_RE = re.compile(rb"^#![ ]*(/(?:\\ |[^ \n\r\t])*)(.*)$", re.MULTILINE)


def _fix_long_shebang(data: bytes) -> bytes:
    """Shebangs over 127 bytes do not work on Linux: use ``#!/usr/bin/env <exe>``."""
    if not data.startswith(b"#!"):
        return data
    first, sep, rest = data.partition(b"\n")
    if len(first) <= SHEBANG_MAX:
        return data
    match = SHEBANG_RE.match(first)
    if not match:
        return data
    exe, args = match.group(1), match.group(2)
    return b"#!/usr/bin/env " + os.path.basename(exe) + args + sep + rest


# --------------------------------------------------------------------------- sync-envs


def _image_envs(config: Config) -> list[tuple[str, str]]:
    """(name, prefix) of every conda env in the image's env dirs, first dir wins."""
    found: dict[str, str] = {}
    for d in config.image_env_dirs:
        names = _listdir(d)
        for name in names:
            prefix = os.path.join(d, name)
            if (
                not name.startswith(".")
                and name not in found
                and os.path.isdir(os.path.join(prefix, "conda-meta"))
            ):
                found[name] = os.path.normpath(os.path.abspath(prefix))
    return sorted(found.items())


def recover(envs_dir: str, log: StepLog) -> None:
    """Finish what an interrupted sync left: restore moved-away envs, delete temp copies."""
    names = _listdir(envs_dir)
    for name in names:
        path = os.path.join(envs_dir, name)
        if name.startswith(OLD_PREFIX):
            env_name = name[len(OLD_PREFIX) + 9 :]
            target = os.path.join(envs_dir, env_name)
            if env_name and not os.path.lexists(target):
                os.rename(path, target)
                log.say(f"restored {env_name} after an interrupted update")
            else:
                _remove_ours(path)
                log.write(f"removed leftover {name}")
        elif name.startswith(TMP_PREFIX):
            _remove_ours(path)
            log.write(f"removed leftover {name}")


def _copy_tree(src: str, dst: str) -> None:
    """Copy preserving links, modes and times: ``cp -a`` when present, else shutil."""
    import shutil
    import subprocess

    cp = shutil.which("cp")
    if cp:
        result = subprocess.run(
            [cp, "-a", "--", src, dst], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if result.returncode == 0:
            return
        if os.path.lexists(dst):
            _remove_ours(dst)
    shutil.copytree(src, dst, symlinks=True)


def _make_copy(src: str, final: str, fingerprint: str, config: Config, log: StepLog) -> str:
    """Copy + relocate ``src`` into a temp dir beside ``final``; returns the temp dir."""
    name = os.path.basename(final)
    tmp = os.path.join(config.envs_dir, f"{TMP_PREFIX}{os.urandom(4).hex()}-{name}")
    times = [time.monotonic()]
    try:
        _copy_tree(src, tmp)
        times.append(time.monotonic())
        _pause_point("copied")
        relocator = Relocator(tmp, src, final)
        relocator.run()
        times.append(time.monotonic())
    except BaseException:
        _remove_ours(tmp)
        raise
    if relocator.unsafe:
        log.say(
            f"{name}: {len(relocator.unsafe)} path(s) in conda-meta point outside the env and "
            f"were left alone, e.g. {relocator.unsafe[0]!r}"
        )
    if relocator.skipped_binary:
        log.say(
            f"{name}: {len(relocator.skipped_binary)} binary file(s) keep the image path "
            f"{src} (the new path is longer than their placeholder), e.g. "
            f"{relocator.skipped_binary[0]}"
        )
    state = {
        "version": STATE_VERSION,
        "source": src,
        "prefix": final,
        "image_fingerprint": fingerprint,
        "copy_fingerprint": env_fingerprint(tmp),
        "synced_at": _now(),
        "relocated_files": len(relocator.changed),
    }
    _write_json(os.path.join(tmp, SYNC_STATE), state)
    _flush_to_disk(tmp)
    times.append(time.monotonic())
    copy_s, relocate_s, flush_s = (b - a for a, b in zip(times, times[1:]))
    log.write(
        f"{name}: copied in {copy_s:.2f}s, relocated {len(relocator.changed)} file(s) in "
        f"{relocate_s:.2f}s, flushed to disk in {flush_s:.2f}s"
    )
    return tmp


def _install_new(tmp: str, final: str) -> None:
    """Move a finished copy into place (``final`` must not exist)."""
    _pause_point("before-rename")
    os.rename(tmp, final)


def _swap(tmp: str, final: str, config: Config) -> None:
    """Replace ``final`` by ``tmp``; a crash in between is undone by ``recover``."""
    name = os.path.basename(final)
    old = os.path.join(config.envs_dir, f"{OLD_PREFIX}{os.urandom(4).hex()}-{name}")
    _pause_point("before-swap")
    os.rename(final, old)
    _pause_point("between-renames")
    os.rename(tmp, final)
    _remove_ours(old)


def _register_conda_env(config: Config, prefix: str) -> None:
    """List the copy in ~/.conda/environments.txt so ``conda env list`` shows it."""
    path = os.path.join(config.home, ".conda", "environments.txt")
    try:
        with open(path, encoding="utf-8") as f:
            known = f.read().split("\n")
    except OSError:
        known = []
    if prefix in known:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(prefix + "\n")
    except OSError:
        pass


def sync_env(name: str, src: str, config: Config, log: StepLog) -> str:
    """Bring ``~/.local/envs/<name>`` up to date with the image env; returns what was done."""
    final = os.path.join(config.envs_dir, name)
    image_fp = env_fingerprint(src)
    if not os.path.lexists(final):
        _install_new(_make_copy(src, final, image_fp, config, log), final)
        _register_conda_env(config, final)
        log.say(f"{name}: copied from the image to {final}")
        return "copied"
    state = _read_json(os.path.join(final, SYNC_STATE))
    if state is None:
        return _beside(
            name,
            src,
            image_fp,
            config,
            log,
            f"{final} exists and was not made by the studio start-up: kept as is",
        )
    if state.get("prefix") != final:
        log.say(
            f"{name}: {final} was synced for {state.get('prefix')} (home moved?); "
            "its scripts may still point there"
        )
    if state.get("image_fingerprint") == image_fp:
        log.write(f"{name}: up to date with the image (nothing to do)")
        return "unchanged"
    if env_fingerprint(final) == state.get("copy_fingerprint"):
        _swap(_make_copy(src, final, image_fp, config, log), final, config)
        log.say(f"{name}: updated to the image's new version")
        return "updated"
    return _beside(
        name,
        src,
        image_fp,
        config,
        log,
        f"{name}: the image has a new version, but you changed your copy "
        f"({final}): your env was kept untouched",
    )


def _beside(name: str, src: str, image_fp: str, config: Config, log: StepLog, reason: str) -> str:
    """Make the image's version available as ``<name>-image-<id>`` next to the user's env."""
    beside = os.path.join(config.envs_dir, f"{name}-image-{image_fp[:8]}")
    if os.path.lexists(beside):
        log.write(f"{reason}; the image version is at {beside}")
        return "kept"
    _install_new(_make_copy(src, beside, image_fp, config, log), beside)
    _register_conda_env(config, beside)
    log.say(f"{reason}; the image's version is now at {beside}")
    return "kept"


def step_sync_envs(config: Config, log: StepLog) -> None:
    """Step ``sync-envs``."""
    notes: list[str] = []
    own_dir(config.envs_dir, notes)
    for note in notes:
        log.say(note)
    recover(config.envs_dir, log)
    envs = _image_envs(config)
    if not envs:
        log.say(f"no conda envs in {':'.join(config.image_env_dirs)}: nothing to sync")
        return
    results = {}
    for name, src in envs:
        try:
            results[name] = sync_env(name, src, config, log)
        except OSError as e:
            raise StepError(
                f"Could not copy the image's conda env {name!r} into your home "
                f"({config.envs_dir}): {e}. Check free space on the home volume; "
                "your existing environments were not changed."
            ) from e
    summary = ", ".join(f"{n}: {r}" for n, r in results.items())
    log.say(f"done ({summary})")


# --------------------------------------------------------------------------- user-env


def find_installer(config: Config) -> list[str]:
    """The installer command: STUDIO_INSTALLER, or mamba/micromamba/conda on PATH or /opt/conda."""
    import shlex
    import shutil

    if config.installer:
        return shlex.split(config.installer)
    for name in INSTALLERS:
        found = shutil.which(name) or _executable(os.path.join("/opt/conda/bin", name))
        if found:
            return [found]
    raise StepError(
        "Your studio has an environment.yml, but the image has no conda installer "
        "(mamba, micromamba or conda on PATH or in /opt/conda/bin), so the "
        "environment cannot be built. Use an image with conda, or ask your admin "
        "to set the installer (c.StudioSpawner.startup_installer)."
    )


def _executable(path: str) -> str | None:
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def installer_args(
    installer: list[str], prefix: str, spec: str, exists: bool, lock: str | None = None
) -> list[str]:
    """Arguments to create (or update) ``prefix`` from ``spec`` (and the hub's lock, when this
    installer reads locks: studio-conda-install)."""
    names = [os.path.basename(part) for part in installer]
    if any("micromamba" in name for name in names):
        verb = "install" if exists else "create"
        return installer + [verb, "-y", "-p", prefix, "-f", spec]
    args = installer + ["env", "update" if exists else "create", "-p", prefix, "-f", spec]
    if lock and LOCK_INSTALLER in names:
        args += ["--lock", lock]
    return args


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


class BuildStatus:
    """The user env's build, for the studio home: ``~/.local/share/studio/build.json`` (state
    building / built / unchanged / build-failed, with the error) and ``build.log``."""

    def __init__(self, config: Config) -> None:
        self.dir = os.path.join(config.home, ".local", "share", "studio")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "build.json")
        self.log_path = os.path.join(self.dir, "build.log")

    def set(self, state: str, **fields: object) -> None:
        _write_json(self.path, {"version": STATE_VERSION, "state": state, "at": _now(), **fields})

    def keep(self, source: str, name: str) -> None:
        """Copy a spec file (environment.yml, the lock) beside the status, for downloading."""
        import shutil

        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(self.dir, name))


def step_user_env(config: Config, log: StepLog) -> None:
    """Step ``user-env``."""
    spec = os.path.join(config.files, "environment.yml")
    lock = os.path.join(config.files, LOCK_FILE)
    content = _read_bytes(spec)
    if not content.strip():
        log.say("no environment.yml: nothing to build")
        return
    for line in content.decode("utf-8", "replace").splitlines():
        if line.startswith("# note: "):  # the hub's notes (an ignored prefix, a skipped solve)
            log.say(line[2:])
    lock_content = _read_bytes(lock)
    prefix = os.path.join(config.envs_dir, config.user_env)
    state_path = os.path.join(prefix, USER_ENV_STATE)
    digest = hashlib.sha256(content + b"\0" + lock_content).hexdigest()
    status = BuildStatus(config)
    status.keep(spec, "environment.yml")
    status.keep(lock, LOCK_FILE)
    state = _read_json(state_path) or {}
    if state.get("spec_sha256") == digest:
        log.say(f"{config.user_env}: environment.yml unchanged since the last build")
        status.set("unchanged", prefix=prefix, locked=bool(lock_content))
        return
    status.set("building", prefix=prefix, locked=bool(lock_content))
    started = time.monotonic()
    try:
        _build_user_env(config, log, prefix, spec, lock if lock_content else None, status)
    except Exception as error:  # the studio home shows every failure, then main() reports it
        status.set("build-failed", prefix=prefix, error=str(error))
        raise
    seconds = round(time.monotonic() - started, 2)
    _write_json(state_path, {"version": STATE_VERSION, "spec_sha256": digest, "built_at": _now()})
    status.set("built", prefix=prefix, locked=bool(lock_content), seconds=seconds)
    log.say(f"{config.user_env}: built {prefix} in {seconds} s")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _build_user_env(
    config: Config, log: StepLog, prefix: str, spec: str, lock: str | None, status: BuildStatus
) -> None:
    """Run the installer; on failure remove a prefix it created and raise its output."""
    import shlex
    import shutil
    import subprocess

    installer = find_installer(config)
    exists = os.path.isdir(os.path.join(prefix, "conda-meta"))
    existed = os.path.lexists(prefix)
    os.makedirs(config.envs_dir, exist_ok=True)
    args = installer_args(installer, prefix, spec, exists, lock)
    source = " from the hub's lock" if "--lock" in args else ""
    log.say(("updating " if exists else "creating ") + prefix + source)
    log.write("running: " + " ".join(shlex.quote(a) for a in args))
    try:
        with open(status.log_path, "wb") as out:
            result = subprocess.run(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=config.home,
                stdin=subprocess.DEVNULL,
            )
    except OSError as e:
        raise StepError(f"Could not run the conda installer {installer[0]!r}: {e}.") from e
    output = _read_bytes(status.log_path).decode("utf-8", "replace")
    log.write("installer output:\n" + output)
    if result.returncode != 0:
        if not existed and os.path.isdir(prefix):
            shutil.rmtree(prefix, ignore_errors=True)  # our own half-built env, never user data
        code = result.returncode
        how = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
        raise StepError(
            f"Building your conda environment from environment.yml failed "
            f"({how}). The installer said:\n"
            f"{_tail(output, 25)}"
        )


# --------------------------------------------------------------------------- kernels


def _has_ipykernel(prefix: str) -> bool:
    meta = _listdir(os.path.join(prefix, "conda-meta"))
    if any(re.match(r"ipykernel-[0-9].*\.json$", name) for name in meta):
        return True
    return any(os.path.isdir(os.path.join(sp, "ipykernel")) for sp in _site_packages_dirs(prefix))


def kernel_for_env(name: str, prefix: str) -> dict | None:
    """The kernelspec for an env, or None when it cannot run a kernel (cheap checks only)."""
    env = {"PATH": prefix.replace("$", "$$") + "/bin:${PATH}", "CONDA_PREFIX": prefix}
    meta = {"studio": {"env": name, "prefix": prefix}}
    python = os.path.join(prefix, "bin", "python")
    if os.path.exists(python) and _has_ipykernel(prefix):
        return {
            "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python 3 (env: {name})",
            "language": "python",
            "env": env,
            "metadata": dict(meta, debugger=True),
        }
    r = os.path.join(prefix, "bin", "R")
    if os.path.exists(r) and os.path.isdir(os.path.join(prefix, "lib", "R", "library", "IRkernel")):
        return {
            "argv": [r, "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
            "display_name": f"R (env: {name})",
            "language": "R",
            "env": env,
            "metadata": meta,
        }
    return None


def kernel_dir_name(env_name: str) -> str:
    """A valid kernel name for an env: ``studio-<name>`` with unsafe characters replaced."""
    return KERNEL_PREFIX + re.sub(r"[^a-z0-9._-]", "-", env_name.lower())


def _user_envs(config: Config) -> Iterator[tuple[str, str]]:
    names = _listdir(config.envs_dir)
    for name in names:
        prefix = os.path.join(config.envs_dir, name)
        if not name.startswith(".") and os.path.isdir(prefix):
            yield name, prefix


def _studio_meta(kernel_dir: str) -> dict | None:
    """Our metadata in a kernelspec (``metadata.studio``), None when it is not ours or is
    malformed; a symlinked kernel directory is never ours."""
    if os.path.islink(kernel_dir):
        return None
    spec = _read_json(os.path.join(kernel_dir, "kernel.json")) or {}
    meta = spec.get("metadata")
    studio = meta.get("studio") if isinstance(meta, dict) else None
    return studio if isinstance(studio, dict) else None


def _is_ours(kernel_dir: str) -> bool:
    return _studio_meta(kernel_dir) is not None


def step_kernels(config: Config, log: StepLog) -> None:
    """Step ``kernels`` (also: files that run code by themselves, when private again)."""
    check_autorun(config, log)
    notes: list[str] = []
    own_dir(config.kernels_dir, notes)
    for note in notes:
        log.say(note)
    wanted: dict[str, dict] = {}
    for name, prefix in _user_envs(config):
        spec = kernel_for_env(name, prefix)
        if spec is not None:
            wanted.setdefault(kernel_dir_name(name), spec)
    written = []
    for k, spec in wanted.items():
        outcome = _write_kernel(config.kernels_dir, k, spec)
        if outcome is True:
            written.append(k)
        elif outcome:
            log.say(outcome)
    removed = _remove_stale_kernels(config.kernels_dir, set(wanted), log)
    for k in removed:
        log.say(f"removed kernel {k} (its env is gone)")
    log.say(
        f"{len(wanted)} kernel(s) registered ({len(written)} new or changed, "
        f"{len(removed)} removed)"
    )
    save_autorun(config)


def _write_kernel(kernels_dir: str, name: str, spec: dict) -> bool | str:
    """Write a kernelspec unless identical (False); never writes through a symlink nor over a
    kernelspec that is not ours (returns what it skipped, as a message)."""
    kdir = os.path.join(kernels_dir, name)
    path = os.path.join(kdir, "kernel.json")
    if os.path.islink(kdir) or os.path.islink(path):
        return f"kernel {name}: a symlink is in the way; left alone (remove it to get the kernel)"
    if os.path.lexists(kdir) and not os.path.isdir(kdir):
        return f"kernel {name}: a file is in the way; left alone (remove it to get the kernel)"
    current = _read_json(path)
    if current == spec:
        return False
    if os.path.exists(path) and not _is_ours(kdir):
        if current is None:  # malformed: keep it beside, write ours
            os.replace(path, f"{path}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        else:
            return False
    os.makedirs(kdir, exist_ok=True)
    _write_json(path, spec)
    return True


def _remove_stale_kernels(kernels_dir: str, keep: set, log: StepLog) -> list[str]:
    removed = []
    names = _listdir(kernels_dir)
    for name in names:
        kdir = os.path.join(kernels_dir, name)
        if not name.startswith(KERNEL_PREFIX) or name in keep:
            continue
        if os.path.islink(kdir):
            log.write(f"kernel {name} is a symlink: not ours, left alone")
            continue
        studio = _studio_meta(kdir)
        if studio is not None:
            prefix = studio.get("prefix")
            prefix = prefix if isinstance(prefix, str) else ""
            if prefix and kernel_for_env(os.path.basename(prefix), prefix) is not None:
                continue  # env still there (e.g. renamed kernel dir): keep
            os.remove(os.path.join(kdir, "kernel.json"))
            if not os.listdir(kdir):
                os.rmdir(kdir)
            removed.append(name)
    return removed


# --------------------------------------------------------------------------- private again

AUTORUN_STATE = "autorun.json"
NOTICE = "STUDIO-NOTICE.txt"
# Files in the home that run code by themselves when a kernel, terminal or server starts.
AUTORUN_GLOBS = (
    ".ipython/profile_*/startup/*",
    ".ipython/profile_*/ipython_*config.py",
    ".jupyter/*config.py",
    ".jupyter/*config.json",
    ".local/share/jupyter/kernels/*/kernel.json",
    ".local/lib/python*/site-packages/*.pth",
    ".local/lib/python*/site-packages/usercustomize.py",
    ".local/lib/python*/site-packages/sitecustomize.py",
    ".bashrc", ".bash_profile", ".profile",
)


def autorun_files(home: str) -> dict[str, str]:
    """relative path -> sha256 of every file in the home that runs code by itself."""
    import glob

    found: dict[str, str] = {}
    for pattern in AUTORUN_GLOBS:
        for path in glob.glob(os.path.join(home, pattern)):
            if _is_regular(path):
                try:
                    found[os.path.relpath(path, home)] = _sha256_file(path)
                except OSError:
                    continue
    return found


def _studio_private(config: Config) -> bool | None:
    options = _read_json(os.path.join(config.files, "options.json")) or {}
    private = options.get("private")
    return private if isinstance(private, bool) else None


def check_autorun(config: Config, log: StepLog) -> list[str]:
    """When a studio that was shared starts private, move aside the files that run code by
    themselves and were added or changed while it was shared, and tell the owner in
    ~/STUDIO-NOTICE.txt and the log. Returns the files moved."""
    private = _studio_private(config)
    before = _read_json(os.path.join(config.state_dir, AUTORUN_STATE)) or {}
    now = autorun_files(config.home)
    if private and before.get("private") is False and isinstance(before.get("files"), dict):
        changed = sorted(p for p, digest in now.items() if before["files"].get(p) != digest)
        if changed:
            return _quarantine(config, changed, log)
    return []


def save_autorun(config: Config) -> None:
    """Remember whether this start is private and, as the baseline, the files that run code
    by themselves as a private start leaves them (while shared, the baseline stays: every
    change since the studio was last private is checked when it is private again)."""
    private = _studio_private(config)
    if private is None:
        return
    path = os.path.join(config.state_dir, AUTORUN_STATE)
    files = (_read_json(path) or {}).get("files")
    if private or not isinstance(files, dict):
        files = autorun_files(config.home)
    _write_json(path, {"private": private, "files": files})


def _quarantine(config: Config, changed: list[str], log: StepLog) -> list[str]:
    where = os.path.join(config.state_dir, "quarantine", time.strftime("%Y%m%d-%H%M%S"))
    moved = []
    for rel in changed:
        target = os.path.join(where, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.rename(os.path.join(config.home, rel), target)
        except OSError as e:
            log.say(f"could not move {rel} aside: {e}")
            continue
        moved.append(rel)
    lines = "".join(f"  ~/{rel}\n" for rel in moved)
    text = (
        f"{_now()}: your studio is private again. While it was shared, these files that run\n"
        f"code by themselves (in kernels, terminals or the server) were added or changed:\n"
        f"{lines}They were moved to {where}.\n"
        "Put back the ones you trust (mv them to where they were); delete the others.\n"
    )
    with open(os.path.join(config.home, NOTICE), "a", encoding="utf-8") as f:
        f.write(text + "\n")
    log.say(f"moved {len(moved)} file(s) that run code by themselves and changed while the "
            f"studio was shared to {where}; see ~/{NOTICE}")
    return moved


# --------------------------------------------------------------------------- run


def step_run(config: Config, log: StepLog, command: list[str]) -> None:
    """Step ``run``: init script (time-limited), then exec the command."""
    import shlex

    if not command:
        raise StepError("run: no command given after '--'.")
    script = os.path.join(config.files, "init.sh")
    if _nonempty(script):
        _run_init(config, log, script)
    else:
        log.write("no init.sh")
    log.write("exec " + " ".join(shlex.quote(a) for a in command))
    log.close()
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        raise StepError(f"Could not start the server command {command[0]!r}: {e}.") from e


def _nonempty(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return bool(f.read().strip())
    except OSError:
        return False


def _run_init(config: Config, log: StepLog, script: str) -> None:
    """Run init.sh in its own process group with the time limit; raise on failure."""
    import subprocess

    init_log = os.path.join(os.path.dirname(log.path), "init.log")  # beside the step's log
    log.say(f"running the init script (time limit {config.init_timeout:g}s)")
    with open(init_log, "wb") as out:
        out.write(f"=== init.sh started {_now()}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            ["/bin/sh", script],
            cwd=config.home if os.path.isdir(config.home) else "/",
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        forward = _ForwardStop(proc)
        try:
            code = proc.wait(timeout=config.init_timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise StepError(
                f"Your init script did not finish within {config.init_timeout:g} "
                f"seconds and was stopped. Its last output:\n{_tail_file(init_log)}"
            ) from None
        finally:
            forward.restore()
    if code != 0:
        raise StepError(
            f"Your init script failed (exit code {code}). Its last output:\n{_tail_file(init_log)}"
        )
    log.say("init script finished")


class _ForwardStop:
    """While the init script runs, a stop signal (SIGTERM from the kubelet, SIGINT, SIGHUP)
    goes to its whole process group and ends this program at once: a stop never waits out
    the grace period, even when this program is PID 1 (which ignores signals it does not
    handle)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}

    def handle(self, signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):  # OSError: the script has just ended
            os.killpg(self.proc.pid, signum)
        os._exit(128 + signum)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the init script's whole process group."""
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail_file(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            return _tail(f.read().decode("utf-8", "replace"), lines)
    except OSError:
        return "(no output)"


# --------------------------------------------------------------------------- main


STEPS: dict[str, Callable[[Config, StepLog], None]] = {
    "sync-envs": step_sync_envs,
    "user-env": step_user_env,
    "kernels": step_kernels,
}
USAGE = "usage: studio_startup.sh {sync-envs|user-env|kernels|run -- CMD [ARGS...]}"


def fail(step: str, message: str, log: StepLog | None) -> int:
    """Report a failure: stderr, the step log and /dev/termination-log."""
    text = f"Studio start-up step '{step}' failed: {message}"
    if log is not None:
        log.write("FAILED: " + message)
        text += f"\n(Full log: {log.path})"
    print(text, file=sys.stderr, flush=True)
    try:
        with open("/dev/termination-log", "w", encoding="utf-8") as f:
            f.write(text[-4000:])
    except OSError:
        pass
    return 1


def main(argv: list[str]) -> int:
    """Entry point: ``studio_startup.py <step> [-- CMD...]``."""
    if not argv or (argv[0] not in STEPS and argv[0] != "run"):
        print(USAGE, file=sys.stderr)
        return 2
    step, log = argv[0], None
    try:
        config = Config(dict(os.environ))
        usable_home = os.path.isdir(config.home) and os.access(config.home, os.W_OK)
        log = StepLog(config.state_dir if usable_home else "", step)
        if step == "run":  # the server starts even without a usable home
            rest = argv[1:]
            step_run(config, log, rest[1:] if rest[:1] == ["--"] else rest)
        elif not usable_home:
            log.say(f"skipped: HOME ({config.home}) is not a writable directory, so there is "
                    "nowhere to keep envs and kernels; give studios a home volume "
                    "(KubeSpawner storage) or set HOME in c.KubeSpawner.environment")
        else:
            STEPS[step](config, log)
    except StepError as e:
        return fail(step, str(e), log)
    except Exception as e:  # a bug or an unexpected environment: still one clear message
        if log is not None:
            import traceback

            log.write(traceback.format_exc())
        return fail(step, f"unexpected error: {type(e).__name__}: {e}", log)
    if log is not None:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
