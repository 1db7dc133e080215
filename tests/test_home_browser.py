"""The studio home in Chromium (Playwright), on a real hub whose studios run on the devcluster.

Four people use it: ann (owner, launch member of genomics), ben (connect member), eve
(genomics admin) and the hub admin. Every view and action is clicked as a person would; the
hub's API and the cluster confirm what happened. Screenshots of the home and the new-studio
form go to docs/images/ (the README shows them).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from .hub_fixtures import Hub, start_hub
from .studio_fixtures import BROKEN_IMAGE, STUDIO_IMAGE, studio_hub_config, wait_for_server

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
expect = playwright.expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGES = Path(__file__).parents[1] / "docs" / "images"
MEMBERS = {"genomics": {"ann": "launch", "ben": "connect", "eve": "admin"},
           "proteomics": {"ann": "launch"}}
START_MS = 120_000
# the browser's locale (en-US: 1:16 PM), with the date when it is not today (Nov 28, 2026, …)
CLOCK = r"([A-Z][a-z]{2} \d{1,2}, \d{4}, )?\d{1,2}:\d\d(\s?[AP]M)?"
# A Conda "build" that takes a few seconds and fails like a real one.
INSTALLER = ("sh -c 'echo Solving environment; sleep 6; "
             "echo PackagesNotFoundError: nope >&2; exit 1'")


@pytest.fixture(scope="module")
def hub(devcluster, tmp_path_factory) -> Iterator[Hub]:
    members = tmp_path_factory.mktemp("members") / "workspaces.yaml"
    members.write_text(yaml.safe_dump(MEMBERS))
    config = studio_hub_config(devcluster) + f"""
from studio_spawner.home import configure_studio_home
from studio_spawner.sharing import configure_workspace_sharing
c.JupyterHub.authenticator_class = "studio_spawner.auth.WorkspaceDummyAuthenticator"
c.WorkspaceAuthenticator.workspaces_file = "{members}"
configure_workspace_sharing(c)
configure_studio_home(c)
c.StudioSpawner.conda_solve = False  # the in-pod build below fails like a real one
c.StudioSpawner.lifespan_max_hours = 24
c.StudioSpawner.allow_custom_tools = True
c.StudioSpawner.startup_installer = {INSTALLER!r}
c.StudioSpawner.templates = [
    {{"id": "demo", "display_name": "Demo studio", "image": "{STUDIO_IMAGE}",
      "description": "A small Jupyter server", "default_url": "/api"}},
]
"""
    env = {"KUBECONFIG": str(devcluster.kubeconfig)}
    yield from start_hub(tmp_path_factory.mktemp("home-browser-hub"), config, env=env)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


def login(browser, hub: Hub, user: str):
    """A page logged in as ``user``; the hub lands it on the studio home."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "studio")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/hub/studios")
    return page


def row(page, owner: str, server: str):
    return page.locator(f"tr.studio-row[data-owner='{owner}'][data-server='{server}']")


def status_of(page, owner: str, server: str, wanted: str, timeout: float = 90) -> None:
    """Reload the home until the studio shows ``wanted`` (the page is not live)."""
    deadline = time.monotonic() + timeout
    while True:
        page.reload()
        badge = row(page, owner, server).locator(".studio-status")
        if badge.count() and badge.get_attribute("data-status") == wanted:
            return
        assert time.monotonic() < deadline, f"{owner}/{server} is not {wanted}"
        time.sleep(1)


def new_studio(page, hub: Hub, name: str, *, workspace: str = "genomics", private: bool = False,
               environment_yml: str = "", image: str = "", start: bool = False) -> None:
    page.goto(f"{hub.url}/hub/studios")
    page.click("#studio-new")
    page.wait_for_url("**/hub/studios/new")
    page.fill("#studio-name", name)
    page.fill("#studio-description", f"{name}, made in Chromium")
    if page.locator("select[name=workspace]").count():
        page.select_option("select[name=workspace]", workspace)
    if image:
        page.check("input[name=environment_source][value=custom]")
        page.fill("#studio-image", image)
    if environment_yml:
        page.fill("#studio-environment-yml", environment_yml)
    page.check(f"input[name=private][value={'true' if private else 'false'}]")
    page.click("#studio-add-start" if start else "#studio-add")


def test_owner_adds_starts_extends_opens_stops_and_deletes(hub, browser, devcluster):
    page = login(browser, hub, "ann")
    expect(page.locator("#nav-studios")).to_be_visible()
    new_studio(page, hub, "RNA-seq QC")
    page.wait_for_url("**/hub/studios/ann/rna-seq-qc?**")
    expect(page.locator("#studio-message")).to_contain_text("Added RNA-seq QC")
    expect(page.locator(".studio-page .studio-status")).to_have_attribute("data-status",
                                                                          "stopped")
    expect(page.locator("#studio-details")).to_contain_text("genomics")
    page.goto(f"{hub.url}/hub/studios")
    studio = row(page, "ann", "rna-seq-qc")
    expect(studio).to_contain_text("Demo studio")
    expect(studio.locator(".studio-sharing")).to_have_text("Shared")
    studio.locator("button[data-action=start]").click()
    page.wait_for_url("**/user/ann/rna-seq-qc/**", timeout=START_MS)
    page.goto(f"{hub.url}/hub/studios")
    studio = row(page, "ann", "rna-seq-qc")
    expect(studio.locator(".studio-status")).to_have_attribute("data-status", "running")
    deadline = studio.locator(".studio-deadline")
    expect(deadline).to_have_text(re.compile(rf"stops at {CLOCK} \(in (7 h 5\d min|8 h)\)"))
    studio.locator("select[name=hours]").select_option("2")
    studio.locator(".studio-extend-button").click()
    expect(page.locator("#studio-message")).to_contain_text("RNA-seq QC extended by 2 h")
    expect(row(page, "ann", "rna-seq-qc").locator(".studio-deadline")).to_have_text(
        re.compile(rf"stops at {CLOCK} \(in (9 h 5\d min|10 h)\)"))
    row(page, "ann", "rna-seq-qc").locator("a[data-action=open]").click()
    page.wait_for_url("**/user/ann/rna-seq-qc/**")
    assert '"version"' in page.content()
    page.goto(f"{hub.url}/hub/studios")
    row(page, "ann", "rna-seq-qc").locator("button[data-action=stop]").click()
    status_of(page, "ann", "rna-seq-qc", "stopped")
    pvc = "/api/v1/namespaces/default/persistentvolumeclaims/claim-ann--rna-seq-qc"
    assert devcluster.request("GET", pvc)["metadata"]["name"] == "claim-ann--rna-seq-qc"
    page.goto(f"{hub.url}/hub/studios/ann/rna-seq-qc")
    page.locator("button[data-action=delete]").click()
    dialog = page.locator("#studio-delete-dialog")
    expect(dialog).to_contain_text("claim-ann--rna-seq-qc")
    expect(dialog).to_contain_text("lost for good")
    page.click("#studio-delete-cancel")
    assert "rna-seq-qc" in hub.api("GET", "/users/ann",
                                   params={"include_stopped_servers": 1}).json()["servers"]
    page.locator("button[data-action=delete]").click()
    page.click("#studio-delete-confirm")
    page.wait_for_url(re.compile(r".*/hub/studios\?message=Deleted"))
    expect(page.locator("#studio-message")).to_contain_text("Deleted RNA-seq QC")
    expect(row(page, "ann", "rna-seq-qc")).to_have_count(0)
    assert "rna-seq-qc" not in hub.api("GET", "/users/ann",
                                       params={"include_stopped_servers": 1}).json()["servers"]


@pytest.fixture(scope="module")
def ann_studios(hub, browser) -> dict[str, str]:
    """ann's two running genomics studios, one shared and one private (server names)."""
    page = login(browser, hub, "ann")
    new_studio(page, hub, "Shared work", start=True)
    page.wait_for_url("**/user/ann/shared-work/**", timeout=START_MS)
    new_studio(page, hub, "Private notes", private=True, start=True)
    page.wait_for_url("**/user/ann/private-notes/**", timeout=START_MS)
    page.context.close()
    return {"shared": "shared-work", "private": "private-notes"}


def test_collaborator_finds_and_opens_studios_shared_with_them(hub, browser, ann_studios):
    page = login(browser, hub, "ben")
    expect(page.locator("#studio-empty")).to_contain_text("no studios yet")
    page.click("#studio-views a[data-view=shared]")
    shared = row(page, "ann", ann_studios["shared"])
    expect(shared.locator(".studio-owner")).to_have_text("ann")
    expect(row(page, "ann", ann_studios["private"])).to_have_count(0)
    expect(shared.locator("button[data-action=stop]")).to_have_count(0)
    expect(shared.locator("a[data-action=edit]")).to_have_count(0)
    expect(page.locator("#studio-views a[data-view=workspace]")).to_have_count(0)
    shared.locator("a[data-action=open]").click()
    page.wait_for_url("**/user/ann/shared-work/**")
    if "oauth2/authorize" in page.url:
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/user/ann/shared-work/**")
    deadline = time.monotonic() + 15  # a member who just joined gets their share at login
    while '"version"' not in page.content() and time.monotonic() < deadline:
        time.sleep(1)
        page.reload()
    assert '"version"' in page.content()
    assert page.goto(f"{hub.url}/hub/studios/ann/{ann_studios['private']}").status == 404


def test_workspace_admin_manages_members_studios_without_opening_private_ones(
        hub, browser, ann_studios):
    page = login(browser, hub, "eve")
    page.click("#studio-views a[data-view=workspace]")
    private = row(page, "ann", ann_studios["private"])
    expect(private.locator(".studio-sharing")).to_have_text("Private")
    expect(private.locator("a[data-action=open]")).to_have_count(0)
    expect(private.locator("a[data-action=edit]")).to_have_count(0)
    expect(row(page, "ann", ann_studios["shared"]).locator("a[data-action=open]")).to_have_count(1)
    private.locator("button[data-action=stop]").click()
    expect(private.locator(".studio-status")).to_have_attribute("data-status", "stopping",
                                                               timeout=2000)
    status_of(page, "ann", ann_studios["private"], "stopped")
    row(page, "ann", ann_studios["private"]).locator("button[data-action=start]").click()
    # no reload by the test: the page reloads itself while a studio starts
    expect(row(page, "ann", ann_studios["private"]).locator(".studio-status")).to_have_attribute(
        "data-status", "running", timeout=START_MS)
    model = hub.api("GET", "/users/ann").json()["servers"][ann_studios["private"]]
    assert model["user_options"]["private"] is True, "started as its owner saved it"


def test_hub_admin_sees_all_studios_and_their_configuration(hub, browser, ann_studios):
    page = login(browser, hub, "admin")
    page.click("#studio-views a[data-view=all]")
    private = row(page, "ann", ann_studios["private"])
    expect(private.locator("a[data-action=open]")).to_have_count(1)
    private.locator("a.studio-name").click()
    details = page.locator("#studio-details")
    expect(details).to_contain_text("Private: only the owner can open it")
    expect(details).to_contain_text("registry.studio.test/notebook")


def test_build_failure_comes_back_to_the_form_and_its_report_stays(hub, browser):
    page = login(browser, hub, "ann")
    new_studio(page, hub, "Needs numpy", environment_yml="dependencies:\n  - numpy\n",
               start=True)
    page.wait_for_url(re.compile(r".*/hub/(studios/new|spawn-pending/ann/needs-numpy).*"),
                      timeout=START_MS)
    if "spawn-pending" in page.url:  # slower than the hub's slow_spawn_timeout
        expect(page.locator("#progress-message")).to_contain_text("failed", timeout=START_MS)
        expect(page.locator("#studio-pending-message")).to_be_hidden()
        expect(page.locator("#studio-pending-failed")).to_be_visible()
        page.click("#studio-back")
    error = page.locator(".studio-error[data-field=environment_yml]")
    expect(error).to_contain_text("build failed")
    expect(page.locator("#studio-environment-yml")).to_have_value("dependencies:\n  - numpy\n")
    page.goto(f"{hub.url}/hub/studios/ann/needs-numpy")
    expect(page.locator(".studio-page .studio-status")).to_have_attribute("data-status",
                                                                          "build-failed")
    expect(page.locator("#studio-failure")).to_contain_text("Build report")
    expect(page.locator("#studio-report")).to_contain_text("PackagesNotFoundError: nope")
    page.set_viewport_size({"width": 1100, "height": 700})
    page.screenshot(path=str(IMAGES / "build-report.png"))
    state = wait_for_server(hub, "ann", "needs-numpy")
    assert not state.get("ready")


def test_failing_init_script_comes_back_beside_its_field_and_is_kept(hub, browser):
    page = login(browser, hub, "ann")
    page.goto(f"{hub.url}/hub/studios/new")
    page.fill("#studio-name", "Init fails")
    if page.locator("select[name=workspace]").count():
        page.select_option("select[name=workspace]", "genomics")
    page.click("details.studio-section > summary")
    page.fill("#studio-init", "echo about-to-fail; exit 3")
    began = time.monotonic()
    page.click("#studio-add-start")
    page.wait_for_url(re.compile(r".*/hub/(studios/new|spawn-pending/ann/init-fails).*"),
                      timeout=START_MS)
    if "spawn-pending" in page.url:  # slower than the hub's slow_spawn_timeout
        assert not wait_for_server(hub, "ann", "init-fails", timeout=START_MS / 1000).get("ready")
        expect(page.locator("#progress-message")).to_contain_text("init script")
        page.click("#studio-back")
    error = page.locator(".studio-error[data-field=init_script]")
    expect(error).to_contain_text("Your init script failed (exit code 3)")
    expect(error).to_contain_text("about-to-fail")
    expect(error).to_be_visible()  # Advanced opens to show it
    expect(page.locator("#studio-init")).to_have_value("echo about-to-fail; exit 3")
    page.goto(f"{hub.url}/hub/studios")
    failed = row(page, "ann", "init-fails")
    expect(failed.locator(".studio-status")).to_have_attribute("data-status", "errored")
    expect(failed.locator(".studio-failure")).to_contain_text("init script")
    assert time.monotonic() - began < 100, "the start fails as the script does"
    log = hub.log.read_text()
    assert "never showed up" not in log and "Exception is not set" not in log
    failed.locator(".studio-more summary").click()
    failed.locator("button[data-action=delete]").click()
    page.click("#studio-delete-confirm")
    expect(page.locator("#studio-message")).to_contain_text("Deleted Init fails")
    expect(row(page, "ann", "init-fails")).to_have_count(0)


def test_image_pull_failure_names_the_image_field_and_keeps_the_form(hub, browser):
    page = login(browser, hub, "ann")
    new_studio(page, hub, "Broken image", image=BROKEN_IMAGE, start=True)
    page.wait_for_url(re.compile(r".*/hub/(studios/new|spawn-pending/ann/broken-image).*"),
                      timeout=START_MS)
    if "spawn-pending" in page.url:
        expect(page.locator("#progress-message")).to_contain_text("failed", timeout=START_MS)
        expect(page.locator("#studio-pending-message")).to_be_hidden()
        expect(page.locator("#studio-pending-failed")).to_be_visible()
        page.click("#studio-back")
    expect(page.locator(".studio-error[data-field=image]")).to_contain_text("pulled")
    expect(page.locator("#studio-image")).to_have_value(BROKEN_IMAGE)
    expect(page.locator("#studio-name")).to_have_value("Broken image")
    page.goto(f"{hub.url}/hub/studios")
    expect(row(page, "ann", "broken-image").locator(".studio-status")).to_have_attribute(
        "data-status", "errored")
    expect(row(page, "ann", "broken-image").locator(".studio-failure")).to_contain_text("pulled")


def test_screenshots_of_the_home_and_the_new_studio_form(hub, browser, ann_studios):
    page = login(browser, hub, "ann")
    page.set_viewport_size({"width": 1280, "height": 700})
    page.screenshot(path=str(IMAGES / "studio-home.png"), full_page=True)
    page.click("#studio-new")
    page.fill("#studio-name", "Single-cell atlas")
    page.fill("#studio-description", "Clustering of the 2026 atlas")
    page.set_viewport_size({"width": 1000, "height": 900})
    page.screenshot(path=str(IMAGES / "new-studio.png"), full_page=True)


LONG_NAME = "x" * 64  # no spaces: the browser cannot break it by itself

FITS = """() => {
    const wrap = document.querySelector(".studio-table-wrap");
    const table = wrap.querySelector("table");
    const outside = [...document.querySelectorAll(".studio-table .studio-actions > a, "
        + ".studio-table .studio-actions > button, .studio-table .studio-more summary")]
        .map((el) => el.getBoundingClientRect())
        .filter((r) => r.left < 0 || r.right > window.innerWidth).length;
    const wide = [...table.querySelectorAll("*")]  // what overflows, for the message
        .filter((el) => el.scrollWidth > el.clientWidth + 1).slice(0, 4)
        .map((el) => el.tagName + "." + el.className + " " + el.scrollWidth);
    return {table: table.scrollWidth, wrap: wrap.clientWidth, outside, wide};
}"""


def test_the_studio_table_fits_its_container_with_every_action_in_view(hub, browser, ann_studios):
    page = login(browser, hub, "ann")
    new_studio(page, hub, LONG_NAME)
    page.wait_for_url("**/hub/studios/ann/*")
    page.context.close()
    page = login(browser, hub, "admin")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.click("#studio-views a[data-view=all]")
    expect(row(page, "ann", ann_studios["shared"]).locator("a[data-action=open]")).to_be_visible()
    expect(page.locator("a.studio-name", has_text=LONG_NAME)).to_be_visible()
    for width in (1280, 1920, 390):
        page.set_viewport_size({"width": width, "height": 800})
        fit = page.evaluate(FITS)
        assert fit["table"] <= fit["wrap"] and fit["outside"] == 0, (width, fit)
    page.set_viewport_size({"width": 1280, "height": 800})
    shared = row(page, "ann", ann_studios["shared"])
    shared.locator(".studio-more summary").click()
    for action in ("edit", "duplicate", "delete"):
        box = shared.locator(f"[data-action={action}]").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1280, (action, box)
    shared.locator("a[data-action=edit]").click()
    page.wait_for_url(f"**/studios/ann/{ann_studios['shared']}/edit")
    expect(page).to_have_title(re.compile("^Edit Shared work"))
    expect(page.locator(".breadcrumb")).to_contain_text("Shared work")
    expect(page.locator("#studio-form-title")).to_contain_text("Edit Shared work")


def test_add_and_start_shows_it_is_working_and_cannot_be_sent_twice(hub, browser):
    page = login(browser, hub, "ann")
    page.click("#studio-new")
    page.fill("#studio-name", "Held start")
    # The submit is held in the page (after the form's own handler) so its state can be seen.
    page.evaluate("window.addEventListener('submit', (event) => event.preventDefault())")
    page.click("#studio-add-start")
    for button in ("#studio-add", "#studio-add-start"):
        expect(page.locator(button)).to_be_disabled()
    expect(page.locator("#studio-add-start")).to_contain_text("Starting…")
    sent = page.locator("#studio-home-form input.studio-submitter")
    expect(sent).to_have_attribute("value", "add-and-start")  # sent though its button is disabled
    # Shown again from the back-forward cache: the buttons work again.
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    expect(page.locator("#studio-add-start")).to_be_enabled()
    expect(page.locator("#studio-add-start")).to_have_text("Add and start")
    expect(sent).to_have_count(0)
    page.context.close()


def test_form_marks_invalid_fields_and_disables_what_the_environment_refuses(hub, browser):
    page = login(browser, hub, "ann")
    page.click("#studio-new")
    page.fill("#studio-name", "Bad env")
    page.click("summary:has-text('Advanced')")
    page.fill("#studio-env", "JUPYTERHUB_X=1\nBAD NAME=2")
    page.fill("#studio-init", "echo hi")
    page.click("#studio-add")
    lines = page.locator(".studio-error[data-field=env] .studio-error-line")
    expect(lines).to_have_count(2)
    expect(page.locator("#studio-env")).to_have_attribute("aria-invalid", "true")
    conda, init = page.locator("#studio-environment-yml"), page.locator("#studio-init")
    expect(conda).to_be_enabled()
    page.check("input[name=environment_source][value=custom]")
    expect(conda).to_be_disabled()
    expect(page.locator(".studio-conda-off")).to_contain_text("custom image")
    page.check("input[name=kind][value=tool]")
    expect(init).to_be_disabled()
    expect(page.locator(".studio-tool-off")).to_contain_text("own command")
    page.check("input[name=environment_source][value=template]")
    expect(init).to_be_enabled()
    expect(init).to_have_value("echo hi")
    expect(conda).to_be_enabled()


def test_times_share_one_format_and_extend_says_when_the_maximum_is_reached(
        hub, browser, ann_studios):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.clock.install()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", "studio")
    page.click("input[type=submit], button[type=submit]")
    page.goto(f"{hub.url}/hub/studios/ann/{ann_studios['shared']}")
    started = page.locator("#studio-details time").first.text_content()
    deadline = page.locator(".studio-deadline").text_content()
    twelve = re.compile(r"\d\s?[AP]M")
    assert bool(twelve.search(started)) == bool(twelve.search(deadline)), (started, deadline)
    for _ in range(5):
        extend = page.locator(".studio-extend-button")
        if not extend.count():
            break
        page.locator("select[name=hours]").select_option(index=-1 + page.locator(
            "select[name=hours] option").count())
        extend.click()
        page.wait_for_url("**/studios/ann/*message=*")
    expect(page.locator(".studio-extend-max")).to_be_disabled()
    expect(page.locator(".studio-extend-max")).to_contain_text("maximum reached")
    page.evaluate("""() => document.querySelector('.studio-deadline').dataset.deadline =
        new Date(Date.now() + (4 * 24 + 23) * 3600e3 + 60e3).toISOString()""")
    page.clock.run_for(31_000)
    expect(page.locator(".studio-deadline")).to_contain_text("(in 4 d 23 h)")
    page.context.close()


def test_progress_page_replaces_starting_up_with_the_failure(hub, browser):
    options = {"name": "Fails slowly", "workspace": "genomics", "template": "demo",
               "environment_yml": "dependencies:\n  - numpy\n"}
    page = login(browser, hub, "ann")
    with ThreadPoolExecutor(1) as pool:  # the hub answers the start after up to 10 s
        started = pool.submit(hub.api, "POST", "/users/ann/servers/fails-slowly", json=options)
        deadline = time.monotonic() + 30
        while "fails-slowly" not in hub.api("GET", "/users/ann").json()["servers"]:
            assert time.monotonic() < deadline and not started.done(), started
            time.sleep(0.2)
        page.goto(f"{hub.url}/hub/spawn-pending/ann/fails-slowly")  # the build takes 6 s
        expect(page.locator("#studio-pending-message")).to_be_visible()
        expect(page.locator("#progress-message")).to_contain_text("failed", timeout=START_MS)
        expect(page.locator("#studio-pending-message")).to_be_hidden()
        expect(page.locator("#studio-pending-failed")).to_be_visible()
        started.result()
    page.context.close()


def test_status_of_each_state_over_http(hub):
    """The status the home derives, seen over HTTP while studios start, build, fail and stop."""
    session = hub.login("ann")

    def status(server: str) -> str | None:
        page = session.get(f"{hub.url}/hub/studios/ann/{server}", timeout=30)
        if page.status_code == 404:
            return None  # the hub has not created the server yet
        return re.search(r'studio-page".*?data-status="([a-z-]+)"', page.text, re.S)[1]

    def watch(server: str, until: str, timeout: float = 120) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1] != until:
            assert time.monotonic() < deadline, f"{server}: {seen}, never {until}"
            now = status(server)
            if now and (not seen or seen[-1] != now):
                seen.append(now)
            time.sleep(0.3)
        return seen

    calls = ThreadPoolExecutor(max_workers=2)  # the hub answers a start after up to 10 s

    def start(server: str, **options) -> None:
        body = {"name": server, "workspace": "genomics", "template": "demo", **options}
        calls.submit(hub.api, "POST", f"/users/ann/servers/{server}", json=body)

    start("conda", environment_yml="dependencies:\n  - nope\n")
    seen = watch("conda", "build-failed")
    assert "building" in seen and set(seen) <= {
        "starting", "building", "build-failed", "stopping"}, seen
    assert seen.index("build-failed") == seen.index("building") + 1, "shown as it happens"
    wait_for_server(hub, "ann", "conda")  # the hub has cleaned up after the failure
    assert status("conda") == "build-failed"
    page = session.get(f"{hub.url}/hub/studios/ann/conda", timeout=30).text
    assert "Build report" in page and "PackagesNotFoundError: nope" in page
    assert "~/.local/state/studio/" in page

    start("plain")
    assert set(watch("plain", "running")) <= {"starting", "running"}
    assert hub.api("DELETE", "/users/ann/servers/plain").status_code in (202, 204)
    assert watch("plain", "stopped")[-1] == "stopped"
    assert 'id="studio-failure"' not in session.get(f"{hub.url}/hub/studios/ann/plain",
                                               timeout=30).text

    began = time.monotonic()
    calls.submit(hub.api, "POST", "/users/ann/servers/pull", json={
        "name": "pull", "workspace": "genomics", "image": BROKEN_IMAGE})
    assert "could not be pulled" in last_progress_event(hub, "ann", "pull")["message"]
    assert time.monotonic() - began < 30, "the progress stream ends as soon as the pull fails"
    assert watch("pull", "errored")[-1] == "errored"
    wait_for_server(hub, "ann", "pull")
    page = session.get(f"{hub.url}/hub/studios/ann/pull", timeout=30).text
    assert "could not be pulled" in page and "Build report" not in page

    start("conda", environment_yml="")  # fixed: a new start clears the failure
    assert watch("conda", "running")[-1] == "running"
    assert 'id="studio-failure"' not in session.get(f"{hub.url}/hub/studios/ann/conda",
                                               timeout=30).text
    hub.api("DELETE", "/users/ann/servers/conda")
    calls.shutdown()


def last_progress_event(hub: Hub, user: str, server: str) -> dict:
    """Follow the spawn's progress stream (what the progress page shows) to its last event."""
    deadline = time.monotonic() + 60
    while True:
        stream = hub.api("GET", f"/users/{user}/servers/{server}/progress", stream=True)
        if stream.status_code == 200:
            break
        assert time.monotonic() < deadline, stream.text
        time.sleep(0.2)  # the hub has not created the server yet
    event: dict = {}
    for line in stream.iter_lines():
        if line.startswith(b"data:"):
            event = json.loads(line[5:])
    return event
