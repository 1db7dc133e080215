"""StudioSpawner glue: form round trip, re-rendered errors, hooks, state and fail-fast."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tornado.web import HTTPError
from traitlets.config import Config

from studio_spawner.cli import offline_spawner
from studio_spawner.errors import OptionsError
from studio_spawner.pod_status import (
    describe_event,
    pod_failure,
    pod_failure_reason,
    with_pull_events,
)
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
    options = await spawner.options_from_form(
        {"name": ["RNA"], "environment_source": ["template"], "template": ["python"],
         "private": ["true"], "lifespan_hours": ["3"]}
    )
    assert options["name"] == "RNA" and options["private"] is True
    assert options["lifespan_hours"] == 3


async def test_failed_submit_rerenders_with_errors_and_input(spawner):
    with pytest.raises(OptionsError) as caught:
        await spawner.options_from_form({"name": ["Keep me"], "lifespan_hours": ["500"],
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
    spawner.user_options = {"name": "s"}
    await spawner.load_user_options()  # the start begins
    with pytest.raises(StudioStartError, match="pull access denied"):
        spawner.is_pod_running(pod)


RESTARTED_ONCE = {"metadata": {"name": "p"}, "status": {
    "phase": "Running", "podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}],
    "containerStatuses": [{"name": "notebook", "ready": True, "restartCount": 1,
                           "state": {"running": {}},
                           "lastState": {"terminated": {"exitCode": 137,
                                                        "reason": "OOMKilled"}}}]}}


async def test_a_restarted_container_fails_a_start_but_not_a_running_studio(spawner):
    assert spawner.is_pod_running(RESTARTED_ONCE), "poll() after a hub restart: still running"
    spawner.user_options = {"name": "s"}
    await spawner.load_user_options()
    with pytest.raises(StudioStartError, match="exit code 137"):
        spawner.is_pod_running(RESTARTED_ONCE)
    assert spawner.is_pod_running(RESTARTED_ONCE), "the start is over: poll() keeps it"


def test_progress_names_startup_steps():
    event = {"message": "raw", "raw_event": {"reason": "Started", "involvedObject": {
        "fieldPath": "spec.initContainers{studio-user-env}"}}}
    assert describe_event(event) == "Building your conda environment…"
    assert describe_event({"raw_event": {"reason": "Pulled"}}) is None


# --- hardening: what is stored, when, and for whom ----------------------------------------------


@pytest.fixture
async def stored():
    """A spawner on a real JupyterHub database row (the hub's ORM, in memory)."""
    from jupyterhub import orm

    db = orm.new_session_factory("sqlite://")()
    user = orm.User(name="alice")
    db.add(user)
    db.commit()
    row = orm.Spawner(user=user, name="rna")
    db.add(row)
    db.commit()
    c = Config()
    for key, value in CATALOG_CONFIG.items():
        setattr(c.StudioSpawner, key, value)
    spawner = offline_spawner(c, "alice", "rna")
    spawner.orm_spawner = row
    row._studio_spawner = __import__("weakref").ref(spawner)
    spawner._spawn_pending = True  # a spawn request, as JupyterHub marks it before storing
    yield spawner, row, db
    await spawner.api.api_client.close()
    db.close()


def as_requester(spawner, name: str, *scopes: str) -> None:
    """What JupyterHub sets before it stores a body: the handler of the request."""
    user = SimpleNamespace(kind="user", name=name)
    spawner.handler = SimpleNamespace(current_user=user, has_scope=lambda scope: scope in scopes)


async def start_checks(spawner) -> None:
    """StudioSpawner.start up to KubeSpawner (which needs a cluster)."""
    try:
        spawner.studio_options = await spawner.parse_off_loop(spawner.raw_options())
    except OptionsError:
        spawner.refuse_options()
        raise
    spawner.save_options(spawner.studio_options.to_user_options())


@pytest.mark.parametrize("body", [[], [1], "x", 3, None])
async def test_a_body_that_is_not_an_object_is_refused_before_it_is_stored(stored, body):
    spawner, row, _ = stored
    as_requester(spawner, "alice")
    with pytest.raises(HTTPError) as caught:
        row.user_options = body
    assert caught.value.status_code == 400 and "options:" in caught.value.log_message
    assert row.user_options is None


async def test_only_the_owner_or_a_hub_admin_changes_stored_options(stored):
    spawner, row, db = stored
    as_requester(spawner, "alice")
    row.user_options = {"name": "mine", "init_script": "echo owner"}
    spawner.user_options = {"name": "mine", "init_script": "echo owner"}
    await start_checks(spawner)
    db.commit()
    saved = dict(row.user_options)

    as_requester(spawner, "eve", "servers")  # a workspace admin: may start, not change
    with pytest.raises(HTTPError) as caught:
        row.user_options = {"name": "mine", "init_script": "echo eve", "disk_gib": "x"}
    assert caught.value.status_code == 403
    assert row.user_options == saved
    as_requester(spawner, "alice")
    assert "echo eve" not in await spawner.get_options_form()
    assert "echo owner" in await spawner.get_options_form()

    as_requester(spawner, "root", "admin:servers")
    row.user_options = {"name": "by admin"}
    spawner.user_options = {"name": "by admin"}
    await start_checks(spawner)
    assert row.user_options["name"] == "by admin"


async def test_an_invalid_body_leaves_the_stored_options_and_the_form_unchanged(stored):
    spawner, row, _ = stored
    as_requester(spawner, "alice")
    row.user_options = spawner.user_options = {"name": "good", "init_script": "echo good"}
    await start_checks(spawner)
    saved = dict(row.user_options)
    row.user_options = spawner.user_options = {"name": "bad", "init_script": "echo bad",
                                               "lifespan_hours": 0}
    with pytest.raises(OptionsError):
        await start_checks(spawner)
    assert row.user_options == saved
    html = await spawner.get_options_form()
    assert "echo good" in html and "echo bad" not in html


async def test_the_api_path_stores_the_normalised_options(stored):
    spawner, row, _ = stored
    as_requester(spawner, "alice")
    row.user_options = spawner.user_options = {"name": " x ", "lifespan_hours": "24",
                                               "disk_gib": "12"}
    await start_checks(spawner)
    assert row.user_options["lifespan_hours"] == 24 and row.user_options["disk_gib"] == 12
    assert row.user_options["name"] == "x" and row.user_options["template"] == "python"
    assert spawner.user_options == row.user_options


async def test_env_values_and_init_script_stay_out_of_user_options(stored):
    spawner, row, db = stored
    as_requester(spawner, "alice")
    body = {"name": "s", "env": {"TOKEN": "s3cret"}, "init_script": "echo s3cret"}
    row.user_options = spawner.user_options = body
    await start_checks(spawner)
    db.commit()
    assert "s3cret" not in repr(row.user_options) and "s3cret" not in repr(spawner.user_options)
    state = spawner.get_state()
    assert state["studio_secrets"] == {"env": {"TOKEN": "s3cret"}, "init_script": "echo s3cret"}

    restarted = offline_spawner(spawner.config, "alice", "rna")  # after a hub restart
    restarted.load_state(state)
    restarted.user_options = dict(row.user_options)  # a start without a body
    await restarted.load_user_options()
    assert restarted.studio_options.env == {"TOKEN": "s3cret"}
    assert restarted.studio_options.init_script == "echo s3cret"
    as_requester(restarted, "eve", "servers")
    assert "s3cret" not in await restarted.get_options_form(), "only the owner's form"
    await restarted.api.api_client.close()


async def test_start_settings_never_leak_between_starts(spawner):
    spawner.default_url = "/configured"
    spawner.user_options = {"name": "s", "template": "python", "resources": "gpu"}
    await spawner.load_user_options()
    assert spawner.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert spawner.default_url == "/lab" and spawner.cpu_limit == 4
    spawner.user_options = {"name": "s", "image": "quay.io/a/b:1", "resources": "small"}
    await spawner.load_user_options()
    assert spawner.extra_resource_limits == {}, "no GPU from the previous start"
    assert spawner.default_url == "/configured" and spawner.cpu_limit == 1
    assert spawner.image == "quay.io/a/b:1"


async def test_a_hostile_environment_yml_never_stalls_the_event_loop(spawner):
    """The check runs in a child process with a time limit: the hub keeps answering."""
    import asyncio
    import time

    spawner.environment_yml_check_seconds = 2
    hostile = "dependencies:\n  - " + "a" * 30000 + "$\n"  # quadratic for a backtracking regex
    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - before - 0.01)

    ticking = asyncio.ensure_future(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(OptionsError) as caught:
            await spawner.parse_off_loop({"name": "s", "template": "python",
                                          "environment_yml": hostile})
    finally:
        ticking.cancel()
    assert "environment_yml" in caught.value.by_field
    assert time.monotonic() - started < 8
    assert lag < 0.25, f"the event loop stalled for {lag:.2f} s"


def pulling(reason: str, message: str) -> dict:
    return status(initContainerStatuses=[{
        "name": "studio-sync-envs", "image": "quay.io/team/img:1",
        "state": {"waiting": {"reason": reason, "message": message}}}])


@pytest.mark.parametrize("message, transient", [
    ("failed to pull: 429 Too Many Requests", True),
    ("dial tcp 10.0.0.1:443: i/o timeout", True),
    ("Back-off pulling image \"quay.io/team/img:1\"", True),
    ("failed to resolve reference \"quay.io/team/img:1\": not found", False),
    ("pull access denied, repository does not exist or may require authorization", False),
    ("failed to authorize: 401 Unauthorized", False),
])
def test_pull_errors_that_may_heal_are_transient(message, transient):
    failure = pod_failure(pulling("ErrImagePull", message))
    assert failure.transient is transient
    assert failure.message.startswith("the image quay.io/team/img:1 could not be pulled")
    assert "start-up step" not in failure.message, "the image is to blame, not the step"


async def test_a_transient_pull_error_is_retried_for_a_bounded_time(spawner):
    import time

    spawner.image_pull_retry_seconds = 0.5
    spawner.user_options = {"name": "s"}
    await spawner.load_user_options()
    pod = pulling("ErrImagePull", "failed to pull: 429 Too Many Requests")
    assert spawner.is_pod_running(pod) is False, "the kubelet retries: wait"
    time.sleep(0.6)
    with pytest.raises(StudioStartError, match="429 Too Many Requests"):
        spawner.is_pod_running(pod)


async def test_a_permanent_pull_error_fails_at_once(spawner):
    spawner.user_options = {"name": "s"}
    await spawner.load_user_options()
    with pytest.raises(StudioStartError, match="the image quay.io/team/img:1 could not be"):
        spawner.is_pod_running(pulling("ErrImagePull", "manifest unknown"))


def test_a_back_off_after_a_permanent_pull_failure_is_permanent():
    backoff = pod_failure(pulling("ImagePullBackOff", "Back-off pulling image"))
    events = [{"reason": "Failed", "message": "Failed to pull image \"x\": not found"},
              {"reason": "BackOff", "message": "Back-off pulling image \"x\""}]
    assert with_pull_events(backoff, events).transient is False
    assert with_pull_events(backoff, events[1:]).transient is True


async def test_options_stored_without_a_start_are_validated_and_normalised(stored):
    """JupyterHub 6 stores options without starting (PUT "add only", PATCH)."""
    spawner, row, _ = stored
    spawner._spawn_pending = False
    as_requester(spawner, "alice")
    with pytest.raises(HTTPError) as caught:
        row.user_options = {"name": "s", "lifespan_hours": 0}
    assert caught.value.status_code == 400 and "lifespan_hours" in str(caught.value)
    assert row.user_options is None
    row.user_options = {"name": " s ", "lifespan_hours": "24", "env": {"K": "s3cret"}}
    assert row.user_options["lifespan_hours"] == 24 and row.user_options["name"] == "s"
    assert "s3cret" not in repr(row.user_options)
    assert row.state["studio_secrets"]["env"] == {"K": "s3cret"}
    as_requester(spawner, "eve", "servers", "start:servers")
    with pytest.raises(HTTPError) as caught:
        row.user_options = {"name": "s", "private": False}
    assert caught.value.status_code == 403
