"""The one error type for bad studio options: every problem names its field and the fix."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one field, in words a user understands."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class OptionsError(ValueError):
    """Raised when options are invalid; carries every field error found."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    @property
    def by_field(self) -> dict[str, str]:
        """The first message for each field, for showing next to the form's inputs."""
        found: dict[str, str] = {}
        for error in self.errors:
            found.setdefault(error.field, error.message)
        return found

    @property
    def jupyterhub_message(self) -> str:
        """Plain-text message JupyterHub shows on the spawn page and in API errors."""
        return "The studio options need fixing: " + "; ".join(str(e) for e in self.errors)

    @property
    def jupyterhub_html_message(self) -> str:
        """HTML list of the problems for the spawn page."""
        items = "".join(
            f"<li><code>{html.escape(e.field)}</code>: {html.escape(e.message)}</li>"
            for e in self.errors
        )
        return f"The studio options need fixing:<ul>{items}</ul>"


MAX_ERRORS = 50  # a hostile body with 100,000 bad keys gets a short answer


def printable(text: str, limit: int = 2000) -> str:
    """Text that can be shown and encoded: lone surrogates escaped, at most `limit` characters
    (field names and messages may quote what the user typed)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Collector:
    """Gathers field errors so one parse reports every problem at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        if len(self.errors) == MAX_ERRORS:
            self.errors.append(FieldError("options", "more problems follow; fix these first"))
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(FieldError(printable(field) or "options", printable(message)))

    def raise_if_any(self) -> None:
        if self.errors:
            raise OptionsError(self.errors)
