"""The in-pod start-up program, shipped into each studio pod as files (see docs/startup.md).

``studio_startup.py`` (standard library only, Python 3.8+) and its POSIX sh launcher
``studio_startup.sh`` run inside the user's image, where this package is not installed.
"""

from __future__ import annotations

from importlib import resources

PROGRAM_FILES = ("studio_startup.sh", "studio_startup.py")


def program_files() -> dict[str, str]:
    """The start-up program's files as ``{file name: text}``, for the pod's files Secret."""
    package = resources.files(__name__)
    return {name: package.joinpath(name).read_text(encoding="utf-8") for name in PROGRAM_FILES}
