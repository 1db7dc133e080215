"""Persist granted extensions in a small JSON file, keyed by server and its start time."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def server_key(user: str, server: str) -> str:
    return f"{user}/{server}"


class ExtensionStore:
    """Extensions per ``user/server``; a new ``started`` time resets them.

    The file is rewritten atomically (temp file + rename) on every change, so a crash or a
    restart never loses or half-writes a granted extension. It is re-read when another process
    changed it: the studio home (in the hub) grants extensions, the lifespan service reads them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._cached: dict[str, dict[str, object]] = {}

    def _file_stamp(self) -> tuple[int, int, int] | None:
        """Changes with every save (each save is a new file, so a new inode)."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    @property
    def _data(self) -> dict[str, dict[str, object]]:
        stamp = self._file_stamp()
        if stamp is None or stamp != self._stamp:
            self._cached, self._stamp = self._load(), stamp
        return self._cached

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error("Cannot read extensions from %s (%s); starting without them", self.path, e)
            return {}
        return {k: v for k, v in data.get("extensions", {}).items() if isinstance(v, dict)}

    def hours(self, user: str, server: str, started: str | None) -> float:
        """Extension hours granted to this start of the server (0 if none)."""
        entry = self._data.get(server_key(user, server))
        if not entry or entry.get("started") != started:
            return 0.0
        return float(entry.get("hours", 0))  # type: ignore[arg-type]

    def set_hours(self, user: str, server: str, started: str | None, hours: float) -> None:
        data = self._data
        data[server_key(user, server)] = {"started": started, "hours": hours}
        self._save(data)

    def prune(self, running: Iterable[tuple[str, str, str | None]]) -> int:
        """Forget extensions of servers that no longer run (or were restarted)."""
        keep = {server_key(u, s): started for u, s, started in running}
        data = self._data
        stale = [k for k, v in data.items() if keep.get(k, object()) != v.get("started")]
        for key in stale:
            del data[key]
        if stale:
            self._save(data)
        return len(stale)

    def _save(self, data: dict[str, dict[str, object]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".extensions-", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "extensions": data}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        self._stamp = self._file_stamp()
