"""A person in a real browser (Debian's Chromium, driven by Playwright) starts a studio."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def logged_in_page(p, hub, user: str, height: int = 1500):
    """Chromium logged in to the hub as `user`: (browser, page)."""
    ARTIFACTS.mkdir(exist_ok=True)
    browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
    page = browser.new_page(viewport={"width": 1000, "height": height})
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "studio")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/hub/**")
    return browser, page


def test_log_in_fill_the_form_and_start_a_studio(studio_hub, devcluster):
    hub = studio_hub
    with playwright.sync_playwright() as p:
        browser, page = logged_in_page(p, hub, "eve")
        page.goto(f"{hub.url}/hub/spawn/eve/browser")
        assert not page.is_visible("#studio-image"), "custom image hidden for a template"
        page.check("input[name=environment_source][value=custom]")
        assert page.is_visible("#studio-image") and page.is_visible(".studio-conda-off")
        page.check("input[name=environment_source][value=template]")
        spec = b"dependencies:\n  - numpy\n"
        page.set_input_files("#studio-environment-file", files=[
            {"name": "environment.yml", "mimeType": "text/yaml", "buffer": spec}])
        page.wait_for_function(
            "document.getElementById('studio-environment-yml').value.includes('numpy')")
        page.fill("#studio-environment-yml", "")  # the demo image has no conda installer
        page.fill("#studio-name", "Browser {studio}")
        page.fill("#studio-description", "Started from Chromium")
        page.check("input[name=private][value=true]")
        page.fill("#studio-lifespan", "4")
        page.click("summary")
        page.fill("#studio-env", "GREETING=hello {world}")
        page.screenshot(path=str(ARTIFACTS / "spawn-form.png"), full_page=True)
        page.click("button[type=submit]")
        page.wait_for_url("**/user/eve/browser/**", timeout=90_000)
        assert '"version"' in page.content() or "started" in page.content()
        browser.close()
    stored = hub.api("GET", "/users/eve").json()["servers"]["browser"]
    assert stored["ready"]
    pod = devcluster.request("GET", "/api/v1/namespaces/default/pods/jupyter-eve--browser")
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "GREETING", "value": "hello {world}"} in env
    assert pod["metadata"]["labels"]["studio.jupyter.org/private"] == "true"
    hub.api("DELETE", "/users/eve/servers/browser")
