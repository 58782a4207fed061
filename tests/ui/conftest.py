"""The UI tier: ``make up``'s stack (:class:`sandbox.stack.Stack`, the same code) on free loopback
ports in a temporary home, started once for all UI tests, and Debian's chromium driven by
Playwright (``executable_path``, ``--no-sandbox``; never ``playwright install``).

Screenshots go to ``.artifacts/ui/`` (git-ignored), named by test and step."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.airflow_run import ROOT, migrate_airflow_db

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / ".artifacts" / "ui"
VIEWPORT = {"width": 1400, "height": 1000}
#: How long a run may take on a loaded 2-core machine.
RUN_TIMEOUT = 420.0


def iso_z(when) -> str:
    """A UTC time as the run notes and the health view write it: ``2026-12-05T14:00:00Z``."""
    return when.in_timezone("UTC").format("YYYY-MM-DDTHH:mm:ss[Z]")


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    """The sandbox store, the ERP simulator and Airflow's four components, as ``make up`` starts them."""
    from sandbox.airflow_services import LEAN_SETTINGS
    from sandbox.stack import Stack

    if not CHROMIUM.exists():
        pytest.fail(f"chromium is not installed at {CHROMIUM}, and the UI tests drive it: "
                    "apt-get install -y chromium (or make system-deps)", pytrace=False)
    home = tmp_path_factory.mktemp("ui_airflow_home")
    migrate_airflow_db(home)
    started = time.monotonic()
    with Stack(home, tmp_path_factory.mktemp("ui_stack"), api_port=0, storefront_port=0, sftp_port=0,
               erp_interval=10, env=LEAN_SETTINGS) as running:
        print(f"\nmake up's stack started in {time.monotonic() - started:.0f} s at {running.url}")
        yield running


@pytest.fixture(scope="package")
def chromium():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a loaded 2-core machine: the UI may take seconds to render
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page, stack, on_form=None) -> None:
    """Airflow's login form, as an operator fills it with ``make up``'s printed login;
    ``on_form(page)`` is called once the form shows."""
    page.goto(f"{stack.url}/")
    page.locator("input[name=password]").wait_for(timeout=30_000)
    if on_form is not None:
        on_form(page)
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(stack.password())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
    page.wait_for_load_state("networkidle")


@pytest.fixture(scope="package")
def signed_in(stack, chromium):
    """A browser context that signed in once; every page opened from it is signed in."""
    context = chromium.new_context(viewport=VIEWPORT)
    first = context.new_page()
    sign_in(first, stack)
    first.close()
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(signed_in):
    page = signed_in.new_page()
    try:
        yield page
    finally:
        page.close()


@pytest.fixture
def shot(request):
    """``shot(page, "step")`` saves ``.artifacts/ui/<test>__<step>.png`` (the whole page)."""

    def save(page, step: str) -> Path:
        path = SHOTS / f"{request.node.name}__{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
