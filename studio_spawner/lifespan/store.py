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
    restart never loses or half-writes a granted extension.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._data: dict[str, dict[str, object]] = self._load()

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
        self._data[server_key(user, server)] = {"started": started, "hours": hours}
        self._save()

    def prune(self, running: Iterable[tuple[str, str, str | None]]) -> int:
        """Forget extensions of servers that no longer run (or were restarted)."""
        keep = {server_key(u, s): started for u, s, started in running}
        stale = [k for k, v in self._data.items() if keep.get(k, object()) != v.get("started")]
        for key in stale:
            del self._data[key]
        if stale:
            self._save()
        return len(stale)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".extensions-", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "extensions": self._data}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
