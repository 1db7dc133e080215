"""The option rules: every field, its bounds, and that errors name the field and the fix."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from studio_spawner.catalog import StudioCatalog
from studio_spawner.errors import OptionsError
from studio_spawner.options import DataMount, StudioOptions, form_to_raw, parse_options

from .conftest import CATALOG_CONFIG, IMAGE

BASE = {"name": "Studio", "template": "python"}


def parse(catalog: StudioCatalog, **changes) -> StudioOptions:
    return parse_options({**BASE, **changes}, catalog)


def errors_of(catalog: StudioCatalog, **changes) -> dict[str, str]:
    with pytest.raises(OptionsError) as caught:
        parse(catalog, **changes)
    return caught.value.by_field


def test_defaults_come_from_the_catalogue(catalog):
    options = parse(catalog)
    assert options.image == IMAGE
    assert options.lifespan_hours == 8
    assert options.resources == "small"
    assert options.disk_gib == 10
    assert options.private is False
    assert options.data == ()


def test_stored_options_parse_back_to_the_same_value(catalog):
    options = parse(
        catalog, description="x\ny", data=[{"name": "scratch", "writable": True}],
        env={"A": "{b}"}, labels={"team": "bio"}, lifespan_hours=120, disk_gib=1,
        init_script="echo {x}", environment_yml="dependencies:\n  - numpy\n",
    )
    assert parse_options(options.to_user_options(), catalog) == options


@pytest.mark.parametrize(
    "value, ok",
    [("a", True), ("x" * 64, True), ("x" * 65, False), ("", False), ("   ", False),
     ("tab\there", False), ("{name}", True), (5, False)],
)
def test_name_is_1_to_64_characters(catalog, value, ok):
    if ok:
        assert parse(catalog, name=value).name == value
    else:
        assert "name" in errors_of(catalog, name=value)


def test_description_is_at_most_500_characters(catalog):
    assert parse(catalog, description="d" * 500).description == "d" * 500
    assert "500" in errors_of(catalog, description="d" * 501)["description"]


@pytest.mark.parametrize(
    "hours, ok",
    [(0, False), (1, True), (120, True), (121, False), ("8", True), ("8h", False),
     (8.5, False), (True, False), (-1, False)],
)
def test_lifespan_bounds(catalog, hours, ok):
    if ok:
        assert parse(catalog, lifespan_hours=hours).lifespan_hours == int(hours)
    else:
        message = errors_of(catalog, lifespan_hours=hours)["lifespan_hours"]
        assert "1" in message and "120" in message


def test_keep_running_only_where_allowed(catalog):
    assert "not allowed" in errors_of(catalog, lifespan_hours=None)["lifespan_hours"]
    catalog.allow_keep_running = True
    assert parse(catalog, lifespan_hours=None).keep_running


def test_locked_lifespan_refuses_other_values(catalog):
    catalog.lifespan_locked = True
    catalog.lifespan_default_hours = 4
    assert parse(catalog).lifespan_hours == 4
    assert parse(catalog, lifespan_hours=4).lifespan_hours == 4
    assert "fixed" in errors_of(catalog, lifespan_hours=5)["lifespan_hours"]
    assert "fixed" in errors_of(catalog, lifespan_hours=None)["lifespan_hours"]


def test_admin_bounds_apply(catalog):
    catalog.lifespan_min_hours, catalog.lifespan_max_hours = 2, 24
    assert "2 to 24" in errors_of(catalog, lifespan_hours=1)["lifespan_hours"]
    assert "2 to 24" in errors_of(catalog, lifespan_hours=25)["lifespan_hours"]


@pytest.mark.parametrize(
    "image, registry_path",
    [
        ("quay.io/jupyter/scipy-notebook:2024-07-29", "quay.io/jupyter/scipy-notebook"),
        ("ubuntu", "docker.io/library/ubuntu"),
        ("jupyter/base-notebook:latest", "docker.io/jupyter/base-notebook"),
        ("localhost:5000/team/img:v1", "localhost:5000/team/img"),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/studio:1", None),
        ("quay.io/a/b@sha256:" + "a" * 64, None),
        ("quay.io/a/b:v1@sha256:" + "0" * 64, None),
    ],
)
def test_valid_custom_images(catalog, image, registry_path):
    options = parse_options({"name": "s", "image": image}, catalog)
    assert options.image == image and options.template is None


@pytest.mark.parametrize(
    "image, fragment",
    [
        ("Quay.io/Jupyter/Scipy", "lowercase"),
        ("quay.io/jupyter/scipy notebook", "spaces"),
        (" quay.io/a/b", "spaces"),
        ("quay.io/a/b:", "not a valid"),
        ("quay.io/a/b@sha256:abc", "not a valid"),
        ("quay.io/a/b@sha256:" + "a" * 63 + "g", "not a valid"),
        ("quay.io/a/b@sha256:" + "a" * 40, "64"),
        ("quay.io//b", "not a valid"),
        ("quay.io/a/b:" + "t" * 129, "not a valid"),
        ("ghcr.io/org/img:1", "not in an allowed registry"),
        ("quay.io/a/b;rm -rf /", "spaces"),
        ("quay.io/a/b:1;x", "not a valid"),
    ],
)
def test_invalid_custom_images(catalog, image, fragment):
    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s", "image": image}, catalog)
    assert fragment in caught.value.by_field["image"]


def test_registry_patterns_are_full_matches(catalog):
    catalog.allowed_registries = ["quay.io/jupyter/*"]
    assert parse_options({"name": "s", "image": "quay.io/jupyter/x"}, catalog)
    with pytest.raises(OptionsError):
        parse_options({"name": "s", "image": "evil.io/quay.io/jupyter/x"}, catalog)
    with pytest.raises(OptionsError):
        parse_options({"name": "s", "image": "quay.io/jupyterx/x"}, catalog)


def test_template_and_custom_image_rules(catalog):
    assert "unknown template" in errors_of(catalog, template="nope")["template"]
    assert "not both" in errors_of(catalog, image="quay.io/x/y")["image"]
    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s"}, catalog)
    assert "choose a template" in caught.value.by_field["template"]
    chose_custom = form_to_raw({"name": ["s"], "environment_source": ["custom"], "image": [""]})[0]
    with pytest.raises(OptionsError) as caught:
        parse_options(chose_custom, catalog)
    assert "choose a template" in caught.value.by_field["image"], "the field the form shows"
    catalog.allow_custom_images = False
    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s", "image": "quay.io/x/y"}, catalog)
    assert "turned off" in caught.value.by_field["image"]


GOOD_YML = """\
name: analysis
channels:
  - conda-forge
  - bioconda
dependencies:
  - numpy>1.7,<1.19.2
  - scipy
  - bioconda::samtools=1.19
  - python=3.11.*
  - r-base 4.3.* *_0
  - pip
  - pip:
    - requests>=2.31
    - "pandas[excel]==2.2.0; python_version >= '3.9'"
"""


def test_environment_yml_accepts_the_conda_schema(catalog):
    assert parse(catalog, environment_yml=GOOD_YML).environment_yml == GOOD_YML


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("- numpy\n- scipy\n", "mapping"),
        ("just text", "mapping"),
        ("dependencies:\n\t- numpy\n", "tabs"),
        ("a: &x [1]\nb: *x\n", "anchors"),
        ("dependencies: [numpy]\nchannel: [x]\n", "unknown key 'channel'"),
        ("channels: [defaults]\n", "channel 'defaults' is not allowed"),
        ("dependencies: [evil::numpy]\n", "channel https://conda.anaconda.org/evil"),
        ("dependencies: ['numpy >>> 1']\n", "not a conda package spec"),
        ("dependencies: ['num$py']\n", "not a conda package spec"),
        ("dependencies:\n  - pip: ['--index-url http://x']\n", "package indexes"),
        ("dependencies:\n  - pip: ['requests >= = 1']\n", "pip requirement"),
        ("dependencies: {numpy: 1}\n", "must be a list"),
        ("dependencies: [[1]]\n", "package spec"),
        ("key: [unclosed\n", "not valid YAML"),
        ("dependencies:\n" + "  - numpy\n" * 40000, "at most 65536 bytes"),
    ],
)
def test_environment_yml_errors(catalog, text, fragment):
    assert fragment in errors_of(catalog, environment_yml=text)["environment_yml"]


def test_conda_refused_with_custom_image_unless_allowed(catalog):
    raw = {"name": "s", "image": "quay.io/x/y", "environment_yml": "dependencies: [numpy]"}
    with pytest.raises(OptionsError) as caught:
        parse_options(raw, catalog)
    assert "custom image" in caught.value.by_field["environment_yml"]
    catalog.allow_conda_with_custom_image = True
    assert parse_options(raw, catalog).environment_yml


def test_conda_refused_by_a_template_that_does_not_accept_it(catalog):
    errors = errors_of(catalog, template="rstudio", environment_yml="dependencies: [numpy]")
    assert "rstudio" in errors["environment_yml"]


def test_data_mounts_are_read_only_unless_the_repository_allows_writes(catalog):
    options = parse(catalog, data=[{"name": "genomes"}, {"name": "scratch", "writable": True}])
    assert options.data == (DataMount("genomes", False), DataMount("scratch", True))
    assert "read-only" in errors_of(
        catalog, data=[{"name": "genomes", "writable": True}]
    )["data[0].writable"]


@pytest.mark.parametrize(
    "data, field",
    [
        ([{"name": "../etc"}], "data[0].name"),
        ([{"name": "nope"}], "data[0].name"),
        ([{"name": "genomes", "mountPath": "/etc"}], "data[0]"),
        ([{"name": "genomes", "writable": "yes"}], "data[0].writable"),
        ([{"name": "genomes"}, {"name": "genomes"}], "data[1].name"),
        ("genomes", "data"),
    ],
)
def test_data_mount_errors(catalog, data, field):
    assert field in errors_of(catalog, data=data)


@pytest.mark.parametrize(
    "env, field, fragment",
    [
        ({"JUPYTERHUB_API_TOKEN": "x"}, "env.JUPYTERHUB_API_TOKEN", "set by the hub"),
        ({"JPY_API_TOKEN": "x"}, "env.JPY_API_TOKEN", "set by the hub"),
        ({"STUDIO_FILES": "x"}, "env.STUDIO_FILES", "set by the hub"),
        ({"1BAD": "x"}, "env.1BAD", "letters, digits"),
        ({"BAD-NAME": "x"}, "env.BAD-NAME", "letters, digits"),
        ({"A": "v" * 4097}, "env.A", "4096"),
        ({"A": 1}, "env", "mapping"),
    ],
)
def test_env_errors(catalog, env, field, fragment):
    assert fragment in errors_of(catalog, env=env)[field]


def test_admin_protected_env_names(catalog):
    catalog.protected_env_names = ["AWS_*"]
    assert "set by the hub" in errors_of(catalog, env={"AWS_SECRET": "x"})["env.AWS_SECRET"]


@pytest.mark.parametrize(
    "key, ok",
    [
        ("team", True),
        ("example.com/team", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("example.com/" + "a" * 63, True),
        ("Example.com/team", False),
        ("/team", False),
        ("-team", False),
        ("team-", False),
        ("hub.jupyter.org/username", False),
        ("kubernetes.io/name", False),
        ("node.kubernetes.io/x", False),
        ("app", False),
        ("component", False),
        ("studio.jupyter.org/private", False),
    ],
)
def test_label_keys(catalog, key, ok):
    if ok:
        assert parse(catalog, labels={key: "v"}).labels == {key: "v"}
    else:
        assert f"labels.{key}" in errors_of(catalog, labels={key: "v"})


@pytest.mark.parametrize("value, ok", [("", True), ("v1.2_x", True), ("a" * 63, True),
                                       ("a" * 64, False), ("a b", False), ("a{b}c", False)])
def test_label_values(catalog, value, ok):
    if ok:
        assert parse(catalog, labels={"k": value}).labels == {"k": value}
    else:
        assert "63" in errors_of(catalog, labels={"k": value})["labels.k"]


def test_resources_follow_the_template(catalog):
    assert parse(catalog, resources="gpu").resources == "gpu"
    assert "choose one of: small, gpu" in errors_of(catalog, resources="large")["resources"]


@pytest.mark.parametrize("size, ok", [(0, False), (1, True), (100, True), (101, False),
                                      ("20", True), ("2.5", False)])
def test_disk_size_bounds(catalog, size, ok):
    if ok:
        assert parse(catalog, disk_gib=size).disk_gib == int(size)
    else:
        assert "GiB" in errors_of(catalog, disk_gib=size)["disk_gib"]


def test_disk_size_is_fixed_once_the_volume_exists(catalog):
    with pytest.raises(OptionsError) as caught:
        parse_options({**BASE, "disk_gib": 20}, catalog, existing_disk_gib=10)
    assert "cannot be resized" in caught.value.by_field["disk_gib"]
    assert parse_options(BASE, catalog, existing_disk_gib=10).disk_gib == 10


def test_init_script_is_bounded(catalog):
    script = "echo {x}\n" * 10
    assert parse(catalog, init_script=script).init_script == script
    assert "16384" in errors_of(catalog, init_script="x" * 16385)["init_script"]
    assert "control" in errors_of(catalog, init_script="a\0b")["init_script"]


def test_workspace_must_be_one_of_the_users(catalog):
    raw = {**BASE, "workspace": "genomics"}
    assert parse_options(raw, catalog, workspaces=["genomics", "ml"]).workspace == "genomics"
    assert parse_options(BASE, catalog, workspaces=["solo"]).workspace == "solo"
    with pytest.raises(OptionsError) as caught:
        parse_options(raw, catalog, workspaces=["ml"])
    assert "ml" in caught.value.by_field["workspace"]


def test_private_is_a_boolean_with_an_admin_default(catalog):
    assert parse(catalog, private=True).private is True
    assert "true or false" in errors_of(catalog, private="yes")["private"]
    catalog.private_default = True
    assert parse(catalog).private is True


def test_unknown_keys_and_non_objects_are_refused(catalog):
    assert "unknown option" in errors_of(catalog, mountPath="/")["mountPath"]
    with pytest.raises(OptionsError) as caught:
        parse_options(["not", "a", "dict"], catalog)  # type: ignore[arg-type]
    assert "options" in caught.value.by_field


def test_every_problem_is_reported_at_once(catalog):
    errors = errors_of(catalog, name="", lifespan_hours=0, disk_gib=0, labels={"app": "x"})
    assert {"name", "lifespan_hours", "disk_gib", "labels.app"} <= set(errors)


def test_form_fields_become_the_same_options_as_json(catalog):
    form = {
        "name": ["Studio"], "environment_source": ["template"], "template": ["python"],
        "image": ["ignored/when:template"], "data": ["scratch"], "data_writable": ["scratch"],
        "private": ["true"], "lifespan_hours": ["12"], "env": ["A=1\r\nB={x}=y\n"],
        "labels": ["team=bio"], "disk_gib": ["20"], "init_script": ["echo hi"],
        "environment_yml": [""], "description": [""], "resources": [""],
    }
    raw, problems = form_to_raw(form)
    assert problems == []
    options = parse_options(raw, catalog)
    assert options == parse_options(
        {"name": "Studio", "template": "python", "data": [{"name": "scratch", "writable": True}],
         "private": True, "lifespan_hours": 12, "env": {"A": "1", "B": "{x}=y"},
         "labels": {"team": "bio"}, "disk_gib": 20, "init_script": "echo hi"},
        catalog,
    )


def test_form_keep_running_and_bad_lines(catalog):
    catalog.allow_keep_running = True
    raw, problems = form_to_raw({"name": ["s"], "template": ["python"], "keep_running": ["true"],
                                 "env": ["NOEQUALS"]})
    assert raw["lifespan_hours"] is None
    with pytest.raises(OptionsError) as caught:
        parse_options(raw, catalog, form_errors=problems)
    assert "NAME=value" in caught.value.by_field["env"]


@pytest.mark.parametrize(
    "setting, value, fragment",
    [
        ("templates", [{"id": "x", "display_name": "X"}], "templates[0]"),
        ("templates", [{"id": "Bad Id", "display_name": "X", "image": "a"}], "ids"),
        ("templates", [{"id": "x", "display_name": "X", "image": "Bad Image"}], "image"),
        ("templates", [{"id": "x", "display_name": "X", "image": "a", "imgae": 1}], "unknown"),
        ("resource_presets", [{"id": "s", "display_name": "S", "mem_limit": "lots"}], "quantity"),
        ("data_repositories", [{"name": "a", "bucket": "b"}, {"name": "a", "bucket": "c"}],
         "duplicate"),
    ],
)
def test_admin_config_errors_name_the_setting(setting, value, fragment):
    with pytest.raises(TraitError) as caught:
        StudioCatalog(**{**CATALOG_CONFIG, setting: value})
    assert f"StudioSpawner.{setting}" in str(caught.value) and fragment in str(caught.value)


# --- hardening: image references and the registry allow-list ---------------------------------

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    "image, patterns, ok",
    [
        ("Quay.io/jupyter/x:1", ["quay.io/**"], True),
        ("QUAY.IO:443/jupyter/x", ["quay.io/jupyter/*"], True),
        ("quay.io:8443/jupyter/x", ["quay.io/**"], False),
        ("quay.io:8443/jupyter/x", ["quay.io:8443/**"], True),
        ("quay.io/jupyter/x/y", ["quay.io/jupyter/*"], False),
        ("quay.io/jupyter/x/y", ["quay.io/jupyter/**"], True),
        ("quay.io/jupyterx/y", ["quay.io/jupyter*/y"], True),
        ("evil.example.com/a.dkr.ecr.x.amazonaws.com/b:1", ["*.dkr.ecr.*.amazonaws.com/**"],
         False),
        ("a.evil.dkr.ecr.x.amazonaws.com/b:1", ["*.dkr.ecr.*.amazonaws.com/**"], False),
        (f"{ECR}/team/img:1", ["*.dkr.ecr.*.amazonaws.com/**"], True),
        (f"{ECR}:443/team/img:1", ["*.dkr.ecr.*.amazonaws.com/**"], True),
        ("anything.example/x", ["*"], True),
    ],
)
def test_allowed_registries_match_host_and_path_separately(catalog, image, patterns, ok):
    catalog.allowed_registries = patterns
    if ok:
        assert parse_options({"name": "s", "image": image}, catalog).image == image
    else:
        with pytest.raises(OptionsError) as caught:
            parse_options({"name": "s", "image": image}, catalog)
        assert "not in an allowed registry" in caught.value.by_field["image"]


@pytest.mark.parametrize("image", [f"{ECR}:443/team/img:1", f"{ECR.upper()}/team/img:1",
                                   f"{ECR}:8443/team/img:1"])
def test_the_ecr_region_policy_sees_through_ports_and_case(catalog, image):
    catalog.allowed_registries = ["*"]
    catalog.ecr_allowed_regions = ["eu-west-1"]
    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s", "image": image}, catalog)
    assert "region us-east-1 is not allowed" in caught.value.by_field["image"]


@pytest.mark.parametrize("image", ["quay.io/a/b:tägé", "quay.io/a/b:٣", "quay.io/a/ｂ:1"])
def test_tags_and_names_are_ascii(catalog, image):
    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s", "image": image}, catalog)
    assert "not a valid image reference" in caught.value.by_field["image"]


@pytest.mark.parametrize("pattern", ["quay.io", "quay.io/", "https://quay.io/*", "quay.io/a b"])
def test_bad_registry_patterns_stop_the_hub(pattern):
    with pytest.raises(TraitError, match=r"allowed_registries\[0\]"):
        StudioCatalog(allowed_registries=[pattern])


# --- hardening: reserved labels ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["sidecar.istio.io/inject", "istio.io/rev",
                                 "azure.workload.identity/use", "kueue.x-k8s.io/queue-name",
                                 "security.istio.io/tlsMode", "linkerd.io/inject",
                                 "eks.amazonaws.com/role-arn", "node.kubernetes.io/x"])
def test_service_mesh_identity_and_scheduler_labels_are_reserved(catalog, key):
    assert "reserved" in errors_of(catalog, labels={key: "true"})[f"labels.{key}"]


def test_reserved_label_prefixes_are_dns_subdomains():
    with pytest.raises(TraitError, match=r"reserved_label_prefixes\[0\]"):
        StudioCatalog(reserved_label_prefixes=["Istio.io/*"])


def test_admins_set_reserved_label_prefixes(catalog):
    assert parse(catalog, labels={"acme.com/team": "bio"}).labels
    catalog.reserved_label_prefixes = [*catalog.reserved_label_prefixes, "acme.com"]
    assert "reserved" in errors_of(catalog, labels={"ci.acme.com/x": "y"})["labels.ci.acme.com/x"]
    assert "reserved" in errors_of(catalog, labels={"istio.io/rev": "y"})["labels.istio.io/rev"]


# --- hardening: input that must give field errors, never another exception --------------------


@pytest.mark.parametrize("key", ["name", "description", "environment_yml", "init_script"])
def test_lone_surrogates_are_field_errors(catalog, key):
    assert "UTF-16" in errors_of(catalog, **{key: "a\ud800b"})[key]


def test_lone_surrogates_in_env_values_are_field_errors(catalog):
    assert "UTF-16" in errors_of(catalog, env={"A": "\udfff"})["env.A"]


@pytest.mark.parametrize("text", ["[" * 30000 + "]" * 30000,
                                  "".join(" " * i + "a:\n" for i in range(2000)),
                                  "dependencies:\n" + "  - [" * 100])
def test_deeply_nested_environment_yml_is_a_field_error(catalog, text):
    assert "nest" in errors_of(catalog, environment_yml=text[:60000])["environment_yml"]


# --- hardening: sizes that keep every accepted studio within Kubernetes' limits ----------------


@pytest.mark.parametrize("setting, value", [
    ("environment_yml_max_bytes", 256 * 1024 + 1), ("init_script_max_bytes", 10**7),
    ("env_max_total_bytes", 10**6), ("env_value_max_chars", 10**6), ("labels_max_count", 65),
])
def test_admin_size_limits_are_bounded(setting, value):
    with pytest.raises(TraitError):
        StudioCatalog(**{setting: value})


def test_env_variables_have_a_total_size_limit(catalog):
    catalog.env_max_total_bytes = 1000
    env = {f"V{i}": "é" * 100 for i in range(5)}  # 5 * (2 + 200) = 1010 bytes
    assert "1010 bytes" in errors_of(catalog, env=env)["env"]
    assert parse(catalog, env=dict(list(env.items())[:4])).env


def test_hostile_sizes_get_short_answers(catalog):
    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s", "template": "python",
                       **{f"k{i}": 1 for i in range(10_000)}}, catalog)
    assert len(caught.value.errors) <= 51 and "9995 more unknown options" in str(caught.value)
    assert "at most 2 entries" in errors_of(catalog, data=[{"name": "genomes"}] * 10_000)["data"]
    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s", "image": "a" * 100_000}, catalog)
    assert "at most" in caught.value.by_field["image"]
    assert "too many entries" in errors_of(
        catalog, environment_yml="dependencies:\n" + "  - numpy\n" * 6000)["environment_yml"]
