"""The admin CLI: exit codes and output of validate and render, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

CONFIG = """
c.StudioSpawner.templates = [
    {"id": "python", "display_name": "Python", "image": "quay.io/jupyter/scipy-notebook:2024"},
]
c.StudioSpawner.lifespan_max_hours = 24
"""


def run(tmp_path: Path, command: str, options: object, *extra: str):
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(CONFIG)
    file = tmp_path / "options.json"
    file.write_text(json.dumps(options))
    return subprocess.run(
        [sys.executable, "-m", "studio_spawner.cli", command, "--config", str(config),
         str(file), *extra],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


def test_validate_prints_normalised_options(tmp_path):
    result = run(tmp_path, "validate", {"name": " Studio ", "lifespan_hours": "12"})
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout)
    assert options["name"] == "Studio" and options["lifespan_hours"] == 12
    assert options["template"] == "python", "the first template is the default"


def test_validate_prints_every_field_error(tmp_path):
    result = run(tmp_path, "validate", {"name": "", "lifespan_hours": 25, "env": {"JPY_X": "1"}})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "lifespan_hours: must be from 1 to 24 hours; got 25" in lines
    assert any(line.startswith("name: ") for line in lines)
    assert any(line.startswith("env.JPY_X: ") for line in lines)


def test_render_prints_the_pod_and_secret(tmp_path):
    result = run(tmp_path, "render", {"name": "s", "env": {"X": "{y}"}}, "--user", "ann",
                 "--server", "rna")
    assert result.returncode == 0, result.stderr
    pod, secret = yaml.safe_load_all(result.stdout)
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "jupyter-ann--rna"
    assert {"name": "X", "value": "{y}"} in pod["spec"]["containers"][0]["env"]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "jupyter-ann--rna-files"


def test_render_refuses_bad_options(tmp_path):
    result = run(tmp_path, "render", {"name": "s", "template": "nope"})
    assert result.returncode == 1
    assert "template: unknown template" in result.stderr


def test_missing_files_are_reported(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "studio_spawner.cli", "validate", str(tmp_path / "none.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "cannot read options" in result.stderr


def test_the_example_hub_config_is_valid(tmp_path):
    config = Path(__file__).parents[1] / "hub_config" / "jupyterhub_config.py"
    file = tmp_path / "options.json"
    file.write_text(json.dumps({"name": "demo", "data": [{"name": "scratch", "writable": True}]}))
    result = subprocess.run(
        [sys.executable, "-m", "studio_spawner.cli", "render", "--config", str(config), str(file),
         "--groups", "workspace:demo:launch"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                          "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    pod, secret, pvc = yaml.safe_load_all(result.stdout)
    assert pod["spec"]["containers"][0]["image"].startswith("quay.io/jupyter/scipy-notebook")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_spawner_entry_point_is_registered():
    from importlib.metadata import entry_points

    from studio_spawner.spawner import StudioSpawner

    [studio] = [e for e in entry_points(group="jupyterhub.spawners") if e.name == "studio"]
    assert studio.load() is StudioSpawner


def test_configuration_reference_is_current():
    from studio_spawner.reference import reference

    docs = Path(__file__).parents[1] / "docs" / "configuration.md"
    assert docs.read_text() == reference(), "run: python -m studio_spawner.reference > " + str(docs)
