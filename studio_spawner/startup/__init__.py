"""The in-pod start-up program, shipped into each studio as files (see docs/architecture.md)."""

from __future__ import annotations

from importlib.resources import files

PROGRAM = ("studio_startup.sh", "studio_startup.py")


def program_files() -> dict[str, str]:
    """{file name: text} of the program files, for the studio's files Secret."""
    folder = files(__package__)
    return {name: folder.joinpath(name).read_text() for name in PROGRAM
            if folder.joinpath(name).is_file()}
