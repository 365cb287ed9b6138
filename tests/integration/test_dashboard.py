"""The dashboard in headless Chromium: sign in, follow a job to its end, see its curves."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.service import Service, poll
from tests.integration.specs import small_mlp
from tests.integration.test_serving import trained

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
EPOCHS = 60


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package)")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        except sync_api.Error as exc:
            pytest.skip(f"chromium cannot be launched: {exc}")
        yield browser
        browser.close()


def test_dashboard_follows_a_job_and_draws_its_curves(service: Service, browser: Any) -> None:
    with service.client() as client:
        spec = {"name": "dashboard-mlp", "dataset": "builtin:digits",
                "model": {"arch": "mlp", "hidden_sizes": [32]},
                "optimizer": {"name": "sgd", "lr": 0.1},
                "training": {"epochs": EPOCHS, "batch_size": 64, "checkpoint_every": 20}}
        job = client.post("/v1/jobs", json=spec).json()

    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{service.base_url}/")
    page.fill("#key", service.keys["alice"])
    page.click("#signin-form button")
    row = page.locator(f'tr[data-job="{job["id"]}"]')
    row.wait_for(timeout=20_000)
    row.locator("a").click()
    page.wait_for_selector("body[data-job-done]", timeout=240_000)

    assert page.get_attribute("body", "data-job-done") == "succeeded"
    assert page.text_content("#job-status") == "succeeded"
    assert page.text_content("#job-progress").startswith(f"epoch {EPOCHS}/{EPOCHS}")
    for line in ("#loss-chart polyline.train_loss", "#loss-chart polyline.val_loss",
                 "#acc-chart polyline.train_accuracy", "#acc-chart polyline.val_accuracy"):
        points = page.get_attribute(line, "points") or ""
        assert len(points.split()) == EPOCHS, line  # one vertex per epoch, none twice
        ys = {p.split(",")[1] for p in points.split()}
        assert len(ys) > 5, f"{line} is flat: the curve is not drawn"
    assert page.locator("#ckpt-body tr").count() >= 1

    page.wait_for_selector("#try:not([hidden])", timeout=20_000)
    page.click("#class-random")
    page.click("#class-go")
    page.wait_for_selector("#try-out:not([hidden])", timeout=20_000)
    assert "class " in page.text_content("#try-out")

    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"dashboard-job-{service.backend}.png"), full_page=True)
    assert not errors, errors

    # A refused key signs the page out.
    page.evaluate("sessionStorage.setItem('trainserve.key', 'ts_wrong')")
    page.goto(f"{service.base_url}/#/")
    page.wait_for_selector("#signin:not([hidden])", timeout=20_000)
    page.close()


def test_dashboard_lists_registered_models_with_their_aliases(service: Service,
                                                              browser: Any) -> None:
    model_id = trained(service, small_mlp(epochs=1))
    name = f"dashboard-{model_id[-6:]}"
    with service.client() as client:
        client.post("/v1/registry", json={"name": name, "description": "digits"})
        client.post(f"/v1/registry/{name}/versions", json={"model_id": model_id})
        client.put(f"/v1/registry/{name}/aliases/production", json={"version": 1})
    page = browser.new_page()
    page.goto(f"{service.base_url}/")
    page.fill("#key", service.keys["alice"])
    page.click("#signin-form button")
    row = page.locator(f'tr[data-registered="{name}"]')
    row.wait_for(timeout=20_000)
    assert row.locator(".aliases").text_content() == "production → v1"
    assert "classifier" in (row.text_content() or "")
    page.close()


def test_dashboard_shows_the_workers_to_admins(service: Service, browser: Any) -> None:
    with service.client("admin") as admin:  # registered at its reconciler's first pass
        name = poll(lambda: next((w["name"] for w in admin.get("/v1/workers").json()["items"]
                                  if w["alive"]), None), timeout=30, what="a live worker")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{service.base_url}/")
    page.fill("#key", service.keys["admin"])
    page.click("#signin-form button")
    page.click('header a[href="#/workers"]')
    row = page.locator(f'tr[data-worker="{name}"]')
    row.wait_for(timeout=20_000)
    assert "cpu" in (row.text_content() or "") and "yes" in (row.text_content() or "")
    # Another key reads why it sees none.
    page.evaluate(f"sessionStorage.setItem('trainserve.key', '{service.keys['alice']}')")
    page.goto(f"{service.base_url}/#/")
    page.goto(f"{service.base_url}/#/workers")
    # A locator, not wait_for_function: the page's CSP forbids eval, which a string
    # predicate needs whenever it is not true at once.
    page.locator("#workers-error").filter(has_text=re.compile(r"^403")).wait_for(
        timeout=20_000)
    assert not errors, errors
    page.close()
