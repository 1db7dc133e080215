"""Property-based tests: any JSON body or form submit gives field errors or valid options.

Drives `parse_options` through the REST shape (any JSON value) and the form shape (lists of
strings), and checks: only `OptionsError` is ever raised; valid options parse back to themselves
from what the hub stores; and the form pre-filled with them submits them again unchanged (as a
browser submits: text areas with CRLF line breaks).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from studio_spawner.catalog import StudioCatalog
from studio_spawner.errors import OptionsError
from studio_spawner.form import form_values
from studio_spawner.options import KNOWN_KEYS, StudioOptions, form_to_raw, parse_options

from .conftest import CATALOG_CONFIG

CATALOG = StudioCatalog(**CATALOG_CONFIG, allow_keep_running=True)
WORKSPACES = ["genomics", "proteomics"]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\ud800\udfff\x00\r\n\t$\"{}"),
               max_size=40)
SCALAR = st.none() | st.booleans() | st.integers(-10**6, 10**12) | st.floats() | TEXT
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?", fullmatch=True)

# Plausible values per field, so that valid options are common, mixed with any JSON.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": TEXT | st.just("Studio"),
    "description": TEXT,
    "template": st.sampled_from(["python", "rstudio", "", "nope"]) | JSON,
    "image": st.sampled_from(["quay.io/a/b:1", "Quay.io:443/x/y", "ubuntu", "a/b:ü", ""]),
    "environment_yml": st.sampled_from(["", "dependencies:\n  - numpy\n", "[[[", "a: *x"])
    | TEXT,
    "data": st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(["genomes", "scratch", "x"])},
        optional={"writable": st.booleans() | JSON}), max_size=3) | JSON,
    "private": st.booleans() | JSON,
    "workspace": st.sampled_from([None, "", *WORKSPACES, "other"]) | JSON,
    "lifespan_hours": st.none() | st.integers(-5, 200) | st.from_regex(r" ?[0-9]{1,4} ?",
                                                                       fullmatch=True) | JSON,
    "env": st.dictionaries(ENV_NAME, TEXT, max_size=4) | JSON,
    "labels": st.dictionaries(LABEL, LABEL | st.just(""), max_size=3) | JSON,
    "resources": st.sampled_from([None, "", "small", "gpu", "large", "x"]) | JSON,
    "disk_gib": st.integers(-1, 200) | st.from_regex(r"[0-9]{1,3}", fullmatch=True) | JSON,
    "init_script": TEXT,
}
# Valid values (mostly): the round trips need options that pass.
PLAIN = st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"])
MULTILINE = st.text(PLAIN | st.sampled_from("\n\t"), max_size=60)
GOOD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "description": MULTILINE,
    "data": st.sampled_from([[], [{"name": "genomes"}], [{"name": "scratch", "writable": True},
                                                         {"name": "genomes"}]]),
    "private": st.booleans(),
    "workspace": st.sampled_from(WORKSPACES),
    "lifespan_hours": st.none() | st.integers(1, 120) | st.integers(1, 120).map(str),
    "env": st.dictionaries(ENV_NAME.filter(lambda n: not n.startswith(("JPY_", "MEM_", "CPU_"))
                                           and n != "HOME"),
                           st.text(st.characters(codec="utf-8", exclude_categories=["Cs"],
                                                 exclude_characters="\x00"), max_size=20)
                           | st.sampled_from(["a\nb", "\"q\"", "$(X)", "x=y", " s "]),
                           max_size=4),
    "labels": st.dictionaries(LABEL.filter(lambda k: k not in (
        "app", "component", "heritage", "release", "chart")), LABEL | st.just(""), max_size=3),
    "resources": st.sampled_from(["small", "gpu"]),
    "disk_gib": st.integers(1, 100),
    "init_script": MULTILINE,
    "environment_yml": st.sampled_from(["", "dependencies:\n  - numpy\n"]),
}
GOOD_BODY = st.fixed_dictionaries(
    {"name": st.text(PLAIN, min_size=1, max_size=64).filter(lambda n: n.strip() == n and n),
     "template": st.just("python")},
    optional=GOOD_VALUES)
BODY = GOOD_BODY | st.fixed_dictionaries({}, optional=FIELD_VALUES) | st.dictionaries(
    st.sampled_from(KNOWN_KEYS) | TEXT, JSON, max_size=6) | JSON


def parse(raw: Any, **kwargs: Any) -> StudioOptions | None:
    """The options, or None for field errors; any other exception fails the test."""
    try:
        return parse_options(raw, CATALOG, workspaces=WORKSPACES, **kwargs)
    except OptionsError as error:
        assert error.errors and all(e.field and e.message for e in error.errors)
        return None


def crlf(text: str) -> str:
    """A browser submits text areas with CRLF line breaks."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def submit(values: dict[str, Any]) -> dict[str, list[str]]:
    """What a browser submits for the form pre-filled with `values` (see form/form.html)."""
    form = {
        "name": [values["name"]],
        "description": [crlf(values["description"])],
        "environment_source": [values["source"]],
        "template": [values["template"] or ""],
        "image": [values["image"] or ""],
        "environment_yml": [crlf(values["environment_yml"])],
        "data": list(values["data"]),
        "data_writable": list(values["data_writable"]),
        "private": ["true" if values["private"] else "false"],
        "lifespan_hours": [str(values["lifespan_hours"])],
        "env": [crlf(values["env"])],
        "labels": [crlf(values["labels"])],
        "resources": [values["resources"] or ""],
        "disk_gib": [str(values["disk_gib"])],
        "init_script": [crlf(values["init_script"])],
        "workspace": [values["workspace"] or ""],
    }
    if values["keep_running"]:
        form["keep_running"] = ["true"]
    return form


@FUZZ
@given(BODY)
def test_any_json_body_gives_field_errors_or_options_that_round_trip(body):
    options = parse(body)
    if options is not None:
        assert parse(options.to_user_options()) == options


@FUZZ
@given(st.dictionaries(
    st.sampled_from([*KNOWN_KEYS, "environment_source", "data_writable", "keep_running", "x"]),
    st.lists(TEXT | st.sampled_from(["python", "custom", "template", "true", "on", "12",
                                     "genomes", "A=1\nB", "a=b"]), max_size=3)))
def test_any_form_submit_gives_field_errors_or_valid_options(formdata):
    raw, problems = form_to_raw(formdata)
    options = parse(raw, form_errors=problems)
    if options is not None:
        assert parse(options.to_user_options()) == options


@FUZZ
@given(GOOD_BODY)
def test_the_prefilled_form_submits_the_same_options(body):
    options = parse(body)
    assume(options is not None)
    values = form_values(CATALOG, options.to_user_options(), "studio")
    raw, problems = form_to_raw(submit(values))
    assert parse(raw, form_errors=problems) == options


@pytest.mark.parametrize("value", ["line one\nline two", "a\r\nb", "\"quoted\"", "tab\there",
                                   "ends with =", "\"", "x\"y\""])
def test_env_values_with_line_breaks_round_trip_through_the_form(value):
    options = parse({"name": "s", "template": "python", "env": {"KEY": value}})
    values = form_values(CATALOG, options.to_user_options(), "studio")
    raw, problems = form_to_raw(submit(values))
    assert parse(raw, form_errors=problems).env == {"KEY": value}
