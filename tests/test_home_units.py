"""The studio home's pure parts: status, the last failure, server names, failure fields."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from studio_spawner.home.rows import failure_field
from studio_spawner.home.servers import managed_workspaces, server_name_for
from studio_spawner.pod_status import pod_failure
from studio_spawner.studio_status import STATUSES, LastFailure, derive_status

SERVER_NAME = re.compile(r"[a-z](?:-?[a-z0-9])*")


def status(**kwargs) -> str:
    facts = {"active": False, "ready": False, "pending": None, "step": None, "failure": None}
    return derive_status(**{**facts, **kwargs})


def test_each_status_from_the_hubs_facts():
    build = LastFailure("conda failed", "studio-user-env")
    pull = LastFailure("the image could not be pulled")
    seen = {
        status(active=True, pending="spawn", step="studio-user-env"),
        status(active=True, pending="spawn", step="studio-kernels"),
        status(active=True, ready=True),
        status(active=True, pending="stop"),
        status(),
        status(failure=build),
        status(failure=pull),
    }
    assert seen == set(STATUSES)
    assert status(failure=build) == "build-failed" and status(failure=pull) == "errored"
    assert status(active=True, ready=True, failure=pull) == "running", "a new start wins"


def test_last_failure_round_trips_through_the_state_and_ignores_junk():
    failure = LastFailure.now("x" * 50_000, "studio-user-env")
    again = LastFailure.from_state({"studio_last_failure": failure.to_state()})
    assert again == failure and again.build_failed and len(again.message) == 16384
    for junk in (None, {}, {"studio_last_failure": "boom"},
                 {"studio_last_failure": {"message": 3}}):
        assert LastFailure.from_state(junk) is None


def test_a_failed_build_step_is_a_build_failure_with_its_log_lines():
    pod = {"status": {"initContainerStatuses": [
        {"name": "studio-sync-envs", "state": {"terminated": {"exitCode": 0}}},
        {"name": "studio-user-env", "state": {"terminated": {
            "exitCode": 1, "message": "PackagesNotFoundError: nope\n"}}},
    ]}}
    failure = pod_failure(pod)
    assert failure is not None and failure.build_failed
    assert "build failed" in failure.message and "PackagesNotFoundError: nope" in failure.message


def test_server_names_follow_jupyterhub_6_rules_and_never_clash():
    assert server_name_for("RNA-seq: QC (v2)", []) == "rna-seq-qc-v2"
    assert server_name_for("Études 2026", []) == "etudes-2026"
    assert server_name_for("42", []) == "studio"
    assert server_name_for("rna", ["rna", "rna-2"]) == "rna-3"


@given(st.text(max_size=80), st.lists(st.text(max_size=30), max_size=5))
def test_any_display_name_gives_a_valid_unused_server_name(display, taken):
    name = server_name_for(display, taken)
    assert SERVER_NAME.fullmatch(name) and len(name) <= 30 and name not in taken


def test_failures_point_at_the_field_they_concern():
    template = {"template": "python", "image": "quay.io/x:1", "data": []}
    custom = {"template": None, "image": "quay.io/x:1"}
    pull = LastFailure("The studio could not start: container 'notebook': the image could not "
                       "be pulled (ErrImagePull)")
    assert failure_field(pull, template) == "template"
    assert failure_field(pull, custom) == "image"
    assert failure_field(pull, {"source": "custom", "template": "python"}) == "image", "form"
    assert failure_field(LastFailure("build", "studio-user-env"), template) == "environment_yml"
    bucket = LastFailure("The studio could not start: data[0]: bucket missing")
    assert failure_field(bucket, template) == "data"
    assert failure_field(LastFailure("The studio did not start in 300 seconds"), custom) is None
    solve = LastFailure("The studio could not start: Conda packages: package numpy is not in x")
    assert failure_field(solve, template | {"environment_yml": "- numpy"}) == "environment_yml"
    init = LastFailure("The studio could not start: container 'notebook' failed with exit code "
                       "1: Studio start-up step 'run' failed: Your init script failed (exit code "
                       "3). Its last output:\nabout to fail", "notebook")
    assert failure_field(init, template) == "init_script"


def test_workspace_managers_from_their_roles():
    roles = ["user", "workspace-genomics-managers", "workspace-Bad_Name-managers", "admin"]
    assert managed_workspaces(roles) == ["genomics"]


def test_an_image_that_cannot_be_pulled_is_no_build_failure_whichever_step_waits():
    pod = {"status": {"initContainerStatuses": [{"name": "studio-user-env", "state": {
        "waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}}
    failure = pod_failure(pod)
    assert failure is not None and not failure.build_failed and failure.container is None
    recorded = LastFailure(f"The studio could not start: {failure.message}", failure.container)
    assert failure_field(recorded, {"template": None, "image": "x"}) == "image"


def test_the_catalog_view_takes_only_its_settings_without_warnings(caplog):
    from traitlets.config import Config

    from studio_spawner.home.config import catalog_view
    from studio_spawner.spawner import StudioSpawner

    config = Config()
    config.StudioSpawner.lifespan_default_hours = 3
    config.StudioSpawner.conda_solve = True  # the spawner's, not the view's
    config.StudioSpawner.start_timeout = 300  # KubeSpawner's
    config.KubeSpawner.namespace = "studios"
    with caplog.at_level("WARNING"):
        view = catalog_view(StudioSpawner, config)
    assert view.lifespan_default_hours == 3
    assert not [r for r in caplog.records if "not recognized" in r.getMessage()]
