"""The dashboard's sweep view in headless Chromium: every trial's curve on one chart with
the pruned ones dimmed, and the objective against each parameter."""

from typing import Any

import pytest

from tests.integration.service import Service
from tests.integration.test_dashboard import OUTPUT, browser  # noqa: F401 - the fixture
from tests.integration.test_sweeps import submit, sweep_body, wait_sweep

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend


def test_dashboard_draws_a_sweep(service: Service, browser: Any) -> None:  # noqa: F811
    with service.client() as client:
        sweep = submit(client, sweep_body())
        done = wait_sweep(client, sweep["id"])
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{service.base_url}/")
    page.fill("#key", service.keys["alice"])
    page.click("#signin-form button")
    row = page.locator(f'tr[data-sweep="{sweep["id"]}"]')
    row.wait_for(timeout=20_000)
    row.locator("a").click()
    page.wait_for_selector("body[data-sweep-done]", timeout=60_000)
    assert page.text_content("#sweep-status") == "succeeded"
    lines = page.locator("#sweep-curves polyline.trial")
    assert lines.count() == len(done["trials"])
    pruned = [t for t in done["trials"] if t["status"] == "pruned"]
    assert page.locator("#sweep-curves polyline.pruned").count() == len(pruned)
    for path in done["spec"]["space"]:
        dots = page.locator(f'svg[data-param="{path}"] circle')
        assert dots.count() == sum(t["value"] is not None for t in done["trials"])
    assert page.locator("#trials-body tr").count() == len(done["trials"])
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard-sweep.png"), full_page=True)
    assert not errors, errors
    page.close()
