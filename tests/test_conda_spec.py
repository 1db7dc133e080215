"""environment.yml as conda users write it: conda's match-spec grammar (py-rattler), export
files, pip's forms with the direct-URL policy, and the channel allow-list however a channel is
named."""

from __future__ import annotations

import time

import pytest
import yaml

from studio_spawner.conda_spec import (
    MAX_PIP_REQUIREMENTS,
    CondaPolicy,
    parse_environment,
    validate_environment_yml,
)
from studio_spawner.pip_spec import PipPolicy

POLICY = CondaPolicy(("conda-forge", "bioconda"))
MAX = 65536


def problems(text: str, policy: CondaPolicy = POLICY) -> list[str]:
    return validate_environment_yml(text, policy, MAX)


def deps(*specs: str) -> str:
    return "channels: [conda-forge]\ndependencies:\n" + "".join(
        f"  - {yaml.safe_dump(s, default_style=chr(39)).strip()}\n" for s in specs
    )


def pip(*lines: str) -> str:
    return "dependencies:\n  - pip\n  - pip:\n" + "".join(
        f"    - {yaml.safe_dump(line, default_style=chr(39)).strip()}\n" for line in lines
    )


SEED_EXAMPLE = """\
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
    - matplotlib=3.10.*
"""


def test_the_seed_example_gets_the_double_equals_hint():
    (problem,) = problems(SEED_EXAMPLE)
    assert "pip uses ==: write `matplotlib==3.10.*`" in problem
    assert "Expected" not in problem  # not packaging's parser message


@pytest.mark.parametrize(
    "line, fixed",
    [("name=1.0", "name==1.0"), ("pandas[excel] = 2.2.0", "pandas[excel]==2.2.0"),
     ("x=1.0; python_version >= '3.9'", "x==1.0; python_version >= '3.9'")],
)
def test_single_equals_in_pip_says_how_to_write_it(line, fixed):
    (problem,) = problems(pip(line))
    assert f"write `{fixed}`" in problem


EXPORT = """\
name: analysis
channels:
  - conda-forge
  - bioconda
dependencies:
  - _libgcc_mutex=0.1=conda_forge
  - numpy=1.26.4=py311h64a7726_0
  - python=3.11.8=hab00c5b_0_cpython
  - samtools=1.19.2=h50ea8bc_1
  - pip:
    - requests==2.31.0
prefix: /home/ann/miniforge3/envs/analysis
"""


def test_conda_env_export_is_accepted_and_prefix_ignored_with_a_note():
    environment, found = parse_environment(EXPORT, POLICY, MAX)
    assert found == []
    assert environment.specs[1] == "numpy=1.26.4=py311h64a7726_0"
    assert "'prefix' is ignored" in environment.notes[0]
    normalised = environment.to_yaml()
    assert "prefix" not in yaml.safe_load(normalised)
    assert "# note: 'prefix' is ignored" in normalised
    assert yaml.safe_load(normalised)["dependencies"][-1] == {"pip": ["requests==2.31.0"]}


def test_conda_list_export_output_becomes_dependencies():
    text = (
        "# This file may be used to create an environment using:\n"
        "# $ conda create --name <env> --file <this file>\n# platform: linux-64\n"
        "_libgcc_mutex=0.1=conda_forge\nnumpy=1.26.4=py311h64a7726_0\nzlib=1.3.1=h4ab18f5_1\n"
    )
    environment, found = parse_environment(text, POLICY, MAX)
    assert found == []
    assert yaml.safe_load(environment.to_yaml())["dependencies"] == [
        "_libgcc_mutex=0.1=conda_forge", "numpy=1.26.4=py311h64a7726_0", "zlib=1.3.1=h4ab18f5_1",
    ]


def test_explicit_lists_are_refused_with_what_to_paste_instead():
    (problem,) = problems("@EXPLICIT\nhttps://conda.anaconda.org/conda-forge/linux-64/x.conda\n")
    assert "conda env export" in problem


@pytest.mark.parametrize(
    "spec",
    [
        "numpy=1.26.4=py311h64a7726_0",  # build string
        "numpy 1.26.* py311*",  # version and build globs
        "numpy >=1.26,<2|==3.0",
        "python=3.11.*",
        "r-base 4.3.* *_0",
        "numpy[version='>=1.26', build_number='>2']",  # bracket keys
        "conda-forge::numpy",
        "conda-forge/label/python_rc::python",  # a label of an allowed channel
        "conda-forge/linux-64::numpy",
        "https://conda.anaconda.org/conda-forge::numpy",  # the full URL of an allowed channel
        "numpy[channel=conda-forge]",
        "numpy[url='https://conda.anaconda.org/conda-forge/linux-64/numpy-1.26.4-0.conda']",
        "bioconda::samtools=1.19",
    ],
)
def test_conda_grammar_is_accepted(spec):
    assert problems(deps(spec)) == []


@pytest.mark.parametrize(
    "spec, fragment",
    [("numpy >>> 1", "not a conda package spec"), ("num$py", "not a conda package spec"),
     ("numpy[foo=bar]", "invalid bracket key"), ("numpy ==", "unable to parse version"),
     ("*", "not a conda package spec")],
)
def test_bad_specs_say_why_in_conda_words(spec, fragment):
    (problem,) = problems(deps(spec))
    assert fragment in problem
    assert spec.strip() in problem


EVIL_WAYS = [
    "evil::numpy",
    "evil/label/dev::numpy",
    "https://evil.example/channel::numpy",
    "numpy[channel=evil]",
    "numpy[channel='https://evil.example/channel']",
    "numpy[url='https://evil.example/channel/linux-64/numpy-1.0-0.tar.bz2']",
    "https://evil.example/channel/linux-64/numpy-1.0-0.tar.bz2",
    "file:///tmp/channel::numpy",
    "defaults::numpy",
]


@pytest.mark.parametrize("spec", EVIL_WAYS)
def test_a_disallowed_channel_is_refused_however_it_is_named(spec):
    (problem,) = problems(deps(spec))
    assert "not allowed here" in problem
    assert "allowed channels: conda-forge, bioconda" in problem


@pytest.mark.parametrize(
    "channel", ["evil", "defaults", "https://evil.example/conda-forge", "/tmp/channel",
                "file:///tmp/channel"],
)
def test_channels_list_is_checked_by_url(channel):
    (problem,) = problems(f"channels: ['{channel}']\n")
    assert f"channel '{channel}' is not allowed" in problem


def test_channels_list_accepts_names_labels_urls_and_nodefaults():
    text = ("channels: [conda-forge, conda-forge/label/dev, 'https://conda.anaconda.org/bioconda',"
            " nodefaults]\n")
    assert problems(text) == []


def test_a_mirror_alias_and_url_entries():
    mirror = CondaPolicy(("conda-forge", "http://127.0.0.1:8123/local"),
                         channel_alias="http://mirror.internal/")
    ok = deps("conda-forge::numpy", "http://mirror.internal/conda-forge::numpy",
              "http://127.0.0.1:8123/local::hello", "hello[channel='http://127.0.0.1:8123/local']")
    assert problems(ok, mirror) == []
    assert problems(deps("http://127.0.0.1:8123/other::hello"), mirror)


VCS = "git+https://github.com/psf/requests@v2.31.0#egg=requests"
DIRECT = "requests @ https://files.example/requests-2.31.0-py3-none-any.whl"


@pytest.mark.parametrize("line", [VCS, DIRECT, "b @ git+https://github.com/a/b.git@main"])
def test_direct_urls_and_vcs_follow_the_admin_policy(line):
    (problem,) = problems(pip(line))
    assert "direct URLs and VCS requirements" in problem and "turned off" in problem
    allowing = CondaPolicy(POLICY.channels, pip=PipPolicy(direct_urls=True))
    assert problems(pip(line), allowing) == []


def test_allowed_direct_urls_still_need_a_secure_remote_url():
    allowing = CondaPolicy(POLICY.channels, pip=PipPolicy(direct_urls=True))
    for line in ("x @ http://plain.example/x.whl", "file:///tmp/x.whl", "x @ file:///tmp/x"):
        (problem,) = problems(pip(line), allowing)
        assert "must start with one of https://" in problem


@pytest.mark.parametrize(
    "line, fragment",
    [("-e git+https://github.com/a/b#egg=b", "editable installs"),
     ("--editable=.", "editable installs"),
     ("-r requirements.txt", "refers to a file"),
     ("-c constraints.txt", "refers to a file"),
     ("--index-url https://pypi.example/simple", "package indexes are set by the administrator"),
     ("--extra-index-url=https://x", "package indexes"),
     ("--no-binary :all:", "not allowed; list requirements only"),
     ("./local/pkg", "local paths"),
     ("requests==2.31 --hash=sha256:abc", "per-requirement options"),
     ("requests >= = 1", "is not valid")],
)
def test_pip_options_and_paths_are_refused_with_the_reason(line, fragment):
    (problem,) = problems(pip(line))
    assert fragment in problem


def test_pip_accepts_pep_508_and_comments():
    lines = ["requests>=2.31", "pandas[excel]==2.2.0; python_version >= '3.9'",
             "numpy  # pinned by conda", "Django~=5.0"]
    environment, found = parse_environment(pip(*lines), POLICY, MAX)
    assert found == []
    assert environment.pip[2] == "numpy  # pinned by conda"


def test_pip_requirement_count_is_bounded():
    lines = [f"pkg{i}" for i in range(MAX_PIP_REQUIREMENTS + 1)]
    assert f"at most {MAX_PIP_REQUIREMENTS} pip requirements" in problems(pip(*lines))[0]


def test_anchors_are_refused_before_expansion():
    laughs = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    (problem,) = problems(laughs)
    assert "anchors and aliases" in problem


def _slowest_ms(text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        validate_environment_yml(text, POLICY, MAX)
        best = min(best, time.perf_counter() - start)
    return best * 1000


@pytest.mark.parametrize(
    "text",
    [
        "dependencies:\n" + "".join(f"  - conda-forge::p{i}>=1.{i},<2=py311h_0\n"
                                    for i in range(500)),
        "dependencies:\n  - 'numpy " + ">=1," * 16000 + "'\n",
        "dependencies:\n  - 'numpy" + "[channel=x]" * 5900 + "'\n",
        "dependencies:\n  - pip:\n" + "".join(f"    - 'p{i}[a,b]>=1.0; python_version >= \"3.9\"'\n"
                                              for i in range(MAX_PIP_REQUIREMENTS)),
        "".join(f"p{i}=1.{i}=py311h64a7726_0\n" for i in range(2200)),
    ],
    ids=["500-specs", "16k-version", "brackets", "pip", "export"],
)
def test_largest_files_validate_in_milliseconds(text):
    """The old hand-written pattern backtracked for ~20 s on a 16 KB spec; now at the size
    limit the slowest case takes tens of milliseconds (bound kept loose for shared CI)."""
    assert len(text.encode()) <= MAX
    assert _slowest_ms(text) < 150


@pytest.mark.parametrize(
    "name", ["CONDA_CHANNELS", "CONDA_CHANNEL_ALIAS", "MAMBA_ROOT_PREFIX", "RATTLER_AUTH_FILE",
             "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"],
)
def test_env_vars_cannot_name_other_channels_or_indexes(catalog, name):
    from studio_spawner.errors import OptionsError
    from studio_spawner.options import parse_options

    with pytest.raises(OptionsError) as caught:
        parse_options({"name": "s", "template": "python", "env": {name: "https://evil.example/"}},
                      catalog)
    assert "set by the hub" in caught.value.by_field[f"env.{name}"]


@pytest.mark.parametrize(("deps", "added"), [
    ("[python, numpy]", True),
    ("[numpy]", True),  # python comes with numpy: the env still gets a kernel
    ("[python, {pip: [requests]}]", True),
    ("[python, 'conda-forge::ipykernel>=6']", False),
    ("[r-base, r-irkernel]", False),
    ("[python, {pip: ['IPyKernel==6.29']}]", False),
    ("[]", False),
])
def test_every_env_gets_a_kernel_package_unless_it_names_one(deps, added):
    env, problems = parse_environment(f"channels: [conda-forge]\ndependencies: {deps}\n",
                                      CondaPolicy(), MAX)
    assert problems == [] and env is not None
    kernelled = env.with_kernel("ipykernel")
    assert (kernelled.specs[-1:] == ("ipykernel",)) is added
    assert (kernelled.kernel == "ipykernel") is added
    text = kernelled.to_yaml()
    assert ("# note: ipykernel was added so that the env becomes a Jupyter kernel" in text) is added
    assert env.with_kernel("") == env
