"""The spawn form: every field present, saved options pre-selected, errors beside the fields."""

from __future__ import annotations

from html.parser import HTMLParser

from studio_spawner.form import field_errors, form_values, render_form, submitted_values


class Inputs(HTMLParser):
    """Collects the form's controls as (tag, attributes) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[tuple[str, dict[str, str | None]]] = []
        self.errors: dict[str, list[str]] = {}  # each field's messages, one per line
        self._error_field: str | None = None
        self._in_line = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in ("input", "textarea", "select", "option"):
            self.controls.append((tag, attributes))
        classes = (attributes.get("class") or "").split()
        if "studio-error" in classes:
            self._error_field = attributes.get("data-field")
            self.errors[self._error_field] = []
        self._in_line = "studio-error-line" in classes

    def handle_data(self, data):
        if self._error_field and self._in_line:
            self.errors[self._error_field].append(data)
            self._in_line = False

    def named(self, name: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.controls if a.get("name") == name]


def parse(html: str) -> Inputs:
    parser = Inputs()
    parser.feed(html)
    return parser


def test_every_field_is_present(catalog):
    catalog.allow_keep_running = True
    form = parse(render_form(catalog, form_values(catalog, None), workspaces=["a", "b"]))
    for name in ("name", "description", "workspace", "environment_source", "template", "image",
                 "environment_yml", "data", "data_writable", "private", "lifespan_hours",
                 "keep_running", "env", "labels", "resources", "disk_gib", "init_script"):
        assert form.named(name), f"the form has no '{name}' field"
    assert [a["value"] for a in form.named("template")] == ["python", "rstudio"]
    assert [a["value"] for a in form.named("data_writable")] == ["scratch"], (
        "write access is offered only for writable repositories"
    )
    assert any(a.get("type") == "file" for _, a in form.controls), "import-from-file button"


def test_saved_options_are_preselected(catalog):
    saved = {"name": "RNA {seq}", "template": "rstudio", "private": True, "lifespan_hours": 24,
             "data": [{"name": "scratch", "writable": True}], "env": {"A": "{b}"},
             "resources": "large", "disk_gib": 30, "environment_yml": "", "init_script": "x"}
    html = render_form(catalog, form_values(catalog, saved))
    form = parse(html)
    assert form.named("name")[0]["value"] == "RNA {seq}"
    checked = {a["value"] for a in form.named("template") if "checked" in a}
    assert checked == {"rstudio"}
    assert {a["value"] for a in form.named("private") if "checked" in a} == {"true"}
    assert form.named("lifespan_hours")[0]["value"] == "24"
    assert {a["value"] for a in form.named("data") if "checked" in a} == {"scratch"}
    assert {a["value"] for a in form.named("data_writable") if "checked" in a} == {"scratch"}
    assert form.named("disk_gib")[0]["value"] == "30"
    selected = [a["value"] for t, a in form.controls if t == "option" and "selected" in a]
    assert selected == ["large"]
    assert "A={b}" in html


def test_custom_image_is_preselected(catalog):
    values = form_values(catalog, {"name": "s", "template": None, "image": "quay.io/a/b:1"})
    form = parse(render_form(catalog, values))
    assert {a["value"] for a in form.named("environment_source") if "checked" in a} == {"custom"}
    assert form.named("image")[0]["value"] == "quay.io/a/b:1"


def test_locked_lifespan_is_shown_and_disabled(catalog):
    catalog.lifespan_locked = True
    catalog.lifespan_default_hours = 6
    form = parse(render_form(catalog, form_values(catalog, None)))
    assert not form.named("lifespan_hours"), "a locked lifespan is not submitted"
    [shown] = [a for _, a in form.controls if a.get("id") == "studio-lifespan"]
    assert shown["value"] == "6" and "disabled" in shown


def test_keep_running_only_when_allowed(catalog):
    assert not parse(render_form(catalog, form_values(catalog, None))).named("keep_running")


def test_errors_show_next_to_their_fields_and_keep_what_was_typed(catalog):
    typed = {"name": ["<script>x</script>"], "env": ["JUPYTERHUB_X=1"], "image": ["Bad Image"],
             "environment_source": ["custom"]}
    errors = {"env.JUPYTERHUB_X": "this variable is set by the hub", "image": "spaces"}
    html = render_form(catalog, submitted_values(typed), errors=errors)
    form = parse(html)
    assert form.errors["env"] == ["JUPYTERHUB_X: this variable is set by the hub"]
    assert form.errors["image"] == ["spaces"]
    assert form.named("image")[0]["value"] == "Bad Image"
    assert "<script>x</script>" not in html, "user text is escaped"
    assert "<details class=\"studio-section\" open" in html, "advanced opens to show its error"


def test_errors_of_fields_not_shown_go_in_the_banner(catalog):
    typed = {"name": ["S"], "environment_source": ["custom"], "image": [""]}
    errors = {"template": "choose a template or enter a custom image", "": "too many studios"}
    html = render_form(catalog, submitted_values(typed), errors=errors)
    banner = html.split('studio-summary', 1)[1].split("</div>", 1)[0]
    assert "choose a template or enter a custom image" in banner, "template is hidden"
    assert "too many studios" in banner and "marked below" not in banner
    assert not parse(html).errors


def test_field_errors_group_nested_fields():
    shown = field_errors({"data[1].writable": "read-only", "labels.app": "reserved"})
    assert shown == {"data": ["read-only"], "labels": ["app: reserved"]}


def test_each_error_of_a_field_is_its_own_line(catalog):
    errors = {"env.JUPYTERHUB_X": "this variable is set by the hub",
              "env.BAD NAME": "a variable name has letters, digits and _"}
    form = parse(render_form(catalog, submitted_values({"env": ["x"]}), errors=errors))
    assert form.errors["env"] == ["JUPYTERHUB_X: this variable is set by the hub",
                                  "BAD NAME: a variable name has letters, digits and _"]


def test_existing_disk_is_read_only(catalog):
    form = parse(render_form(catalog, form_values(catalog, None), existing_disk_gib=10))
    assert "readonly" in form.named("disk_gib")[0]


def test_script_and_style_are_not_html_escaped(catalog):
    html = render_form(catalog, form_values(catalog, None))
    assert "=>" in html and "&amp;&amp;" not in html, "the form's JS must reach the browser intact"


def test_data_repositories_show_bucket_description_and_mode(catalog):
    html = render_form(catalog, form_values(catalog, {}, ""))
    assert "<code>s3://genomes-bucket/</code>" in html and "Reference genomes" in html
    genomes, scratch = html.split('value="genomes"')[1], html.split('value="scratch"')[1]
    assert "read-only" in genomes.split("studio-data-row")[0]
    assert "not renamed" in scratch.split("studio-data-row")[0]
    writable = [a["value"] for a in parse(html).named("data_writable")]
    assert writable == ["scratch"], "write access is offered only where the catalogue allows"


def test_the_examples_come_from_the_settings(catalog):
    catalog.environment_yml_example = "channels:\n  - studio\ndependencies:\n  - studio-hello\n"
    catalog.allowed_registries = ["registry.studio.test/**"]
    catalog.custom_image_example = "registry.studio.test/notebook:1"
    form = parse(render_form(catalog, form_values(catalog, None)))
    assert form.named("environment_yml")[0]["placeholder"] == catalog.environment_yml_example
    assert form.named("image")[0]["placeholder"] == "registry.studio.test/notebook:1"


def test_an_image_example_outside_the_allowed_registries_is_not_shown(catalog):
    catalog.allowed_registries = ["registry.studio.test/**"]  # the default example is on quay.io
    form = parse(render_form(catalog, form_values(catalog, None)))
    assert "placeholder" not in form.named("image")[0]


def test_the_form_says_the_env_becomes_a_kernel(catalog):
    assert "ipykernel is added unless you list ipykernel or r-irkernel" in " ".join(
        render_form(catalog, form_values(catalog, None)).split())
    catalog.conda_kernel_package = ""
    assert "studio-kernel-hint" not in render_form(catalog, form_values(catalog, None))
