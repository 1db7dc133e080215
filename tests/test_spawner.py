"""StudioSpawner glue: form round trip, re-rendered errors, hooks, state and fail-fast."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from studio_spawner.cli import offline_spawner
from studio_spawner.errors import OptionsError
from studio_spawner.pod_status import describe_event, pod_failure_reason
from studio_spawner.spawner import StudioSpawner, StudioStartError

from .conftest import CATALOG_CONFIG


@pytest.fixture
async def spawner():
    c = Config()
    for key, value in CATALOG_CONFIG.items():
        setattr(c.StudioSpawner, key, value)
    spawner = offline_spawner(c, "alice", "rna")
    yield spawner
    await spawner.api.api_client.close()


async def test_form_submit_returns_user_options(spawner):
    options = spawner.options_from_form(
        {"name": ["RNA"], "environment_source": ["template"], "template": ["python"],
         "private": ["true"], "lifespan_hours": ["3"]}
    )
    assert options["name"] == "RNA" and options["private"] is True
    assert options["lifespan_hours"] == 3


async def test_failed_submit_rerenders_with_errors_and_input(spawner):
    with pytest.raises(OptionsError) as caught:
        spawner.options_from_form({"name": ["Keep me"], "lifespan_hours": ["500"],
                                   "environment_source": ["template"], "template": ["python"]})
    assert "lifespan_hours" in caught.value.jupyterhub_message
    assert "<code>lifespan_hours</code>" in caught.value.jupyterhub_html_message
    html = await spawner.get_options_form()
    assert 'value="Keep me"' in html and 'data-field="lifespan_hours"' in html
    html = await spawner.get_options_form()
    assert 'data-field="lifespan_hours"' not in html, "errors are shown once"


async def test_saved_options_prefill_the_form(spawner):
    spawner.user_options = {"name": "Saved {x}", "template": "rstudio"}
    html = await spawner.get_options_form()
    assert 'value="Saved {x}"' in html


async def test_load_user_options_applies_template_and_preset(spawner):
    spawner.user_options = {"name": "s", "template": "python", "resources": "gpu", "disk_gib": 7}
    await spawner.load_user_options()
    assert spawner.image == CATALOG_CONFIG["templates"][0]["image"]
    assert spawner.default_url == "/lab"
    assert spawner.cpu_limit == 4
    assert spawner.extra_resource_limits["nvidia.com/gpu"] == "1"
    assert spawner.storage_capacity == "7Gi"


async def test_api_options_use_the_same_validator(spawner):
    spawner.user_options = {"name": "s", "template": "python", "labels": {"app": "x"}}
    with pytest.raises(OptionsError) as caught:
        await spawner.load_user_options()
    assert "labels.app" in caught.value.by_field


async def test_empty_api_body_starts_the_default_studio(spawner):
    spawner.user_options = {}
    await spawner.load_user_options()
    assert spawner.studio_options.name == "rna"
    assert spawner.studio_options.template == "python"


async def test_disk_size_is_remembered_in_state(spawner):
    spawner.user_options = {"name": "s", "disk_gib": 12}
    await spawner.load_user_options()
    spawner._pvc_exists = True
    state = spawner.get_state()
    assert state["studio_disk_gib"] == 12
    spawner.load_state(state)
    spawner.user_options = {"name": "s", "disk_gib": 20}
    with pytest.raises(OptionsError) as caught:
        await spawner.load_user_options()
    assert "cannot be resized" in caught.value.by_field["disk_gib"]


async def test_admin_after_pod_created_hook_runs_after_ours():
    calls = []
    c = Config()
    c.StudioSpawner.after_pod_created_hook = lambda spawner, pod: calls.append(pod)
    spawner = offline_spawner(c)
    try:
        assert spawner.after_pod_created_hook is not StudioSpawner.create_files_secret
        created = []

        async def fake_create(pod):  # records the order; the real call needs a cluster
            created.append(pod)

        spawner.create_files_secret = fake_create
        await spawner.after_pod_created_hook(spawner, {"metadata": {}})
        assert created and calls, "both hooks ran"
    finally:
        await spawner.api.api_client.close()


def test_cmd_is_required():
    c = Config()
    c.StudioSpawner.cmd = []
    with pytest.raises(ValueError, match="StudioSpawner.cmd"):
        offline_spawner(c)


def status(**kwargs):
    return {"metadata": {"name": "p"}, "status": {"phase": "Pending", **kwargs}}


@pytest.mark.parametrize(
    "pod, fragment",
    [
        (status(containerStatuses=[{"name": "notebook", "state": {"waiting": {
            "reason": "ErrImagePull", "message": "not found"}}}]), "image could not be pulled"),
        (status(initContainerStatuses=[{"name": "studio-user-env", "state": {"terminated": {
            "exitCode": 1, "message": "PackagesNotFoundError: nope"}}}]),
         "failed (build failed) with exit code 1: PackagesNotFoundError: nope"),
        (status(initContainerStatuses=[{"name": "studio-sync-envs", "state": {"waiting": {
            "reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {
                "exitCode": 2, "message": "disk full"}}}]), "exit code 2: disk full"),
        (status(containerStatuses=[{"name": "notebook", "restartCount": 1, "state": {
            "running": {}}, "lastState": {"terminated": {"exitCode": 137}}}]), "exit code 137"),
        (status(phase="Failed", reason="Evicted", message="low memory"), "Evicted low memory"),
    ],
)
def test_failure_reasons(pod, fragment):
    reason = pod_failure_reason(pod)
    assert reason and fragment in reason


def test_pods_still_starting_are_not_failures():
    assert pod_failure_reason(None) is None
    assert pod_failure_reason(status(containerStatuses=[{"name": "n", "state": {
        "waiting": {"reason": "ContainerCreating"}}}])) is None
    assert pod_failure_reason(status(initContainerStatuses=[{"name": "studio-kernels", "state": {
        "terminated": {"exitCode": 0}}}])) is None


async def test_is_pod_running_fails_fast(spawner):
    pod = status(containerStatuses=[{"name": "notebook", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "pull access denied"}}}])
    with pytest.raises(StudioStartError, match="pull access denied"):
        spawner.is_pod_running(pod)


def test_progress_names_startup_steps():
    event = {"message": "raw", "raw_event": {"reason": "Started", "involvedObject": {
        "fieldPath": "spec.initContainers{studio-user-env}"}}}
    assert describe_event(event) == "Building your conda environment…"
    assert describe_event({"raw_event": {"reason": "Pulled"}}) is None
