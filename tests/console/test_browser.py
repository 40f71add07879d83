"""The console in a real headless Chromium (the distribution's package, driven by selenium):
list → open → invalid edit shows the inline error → fix → new version; the test console runs
system/echo and a failing function; the execution opens; a disabled function fails with its
code; a returned <script> stays text. Screenshots go to the test's tmp dir (not committed)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.conftest import Console


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"none of {names} is installed: apt-get install -y chromium chromium-driver")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=_binary("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, seconds: float = 20) -> WebDriverWait[WebDriver]:
    # A page that reloads (a form saved, a toggle posted) replaces the elements a condition
    # holds: a stale one means "not yet", not a failure.
    # (Chromium may also answer "node does not belong to the document" for one.)
    return WebDriverWait(
        driver, seconds, ignored_exceptions=(StaleElementReferenceException, WebDriverException)
    )


def _set(driver: WebDriver, element_id: str, value: str) -> None:
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input', {bubbles: true}));",
        element_id,
        value,
    )


def _run(driver: WebDriver, raw_input: str) -> tuple[str, str]:
    """Run the page's function from the raw JSON editor; returns (status, error code)."""
    driver.execute_script("document.getElementById('run-status').textContent = ''")
    _set(driver, "run-input", raw_input)
    driver.find_element(By.ID, "run").click()
    _wait(driver, 40).until(lambda d: d.find_element(By.ID, "run-status").text != "")
    return driver.find_element(By.ID, "run-status").text, driver.find_element(By.ID, "run-code").text


def _journey(driver: WebDriver, base: str, shots: Path) -> None:
    driver.get(f"{base}functions")
    driver.save_screenshot(str(shots / "functions.png"))
    driver.find_element(By.LINK_TEXT, "hooks/notify").click()
    _wait(driver).until(expected_conditions.title_contains("hooks/notify"))
    assert driver.find_element(By.ID, "version").text == "1"

    _set(driver, "f-input_schema", '{"type": "nonsense"}')
    driver.find_element(By.ID, "save").click()
    error = _wait(driver).until(
        lambda d: d.find_element(By.CSS_SELECTOR, '.field-error[data-field="input_schema"]')
    )
    assert "valid JSON Schema" in error.text
    assert "invalid" in (driver.find_element(By.ID, "f-input_schema").get_attribute("class") or "")
    driver.save_screenshot(str(shots / "edit-refused.png"))
    assert driver.find_element(By.ID, "version").text == "1"

    _set(driver, "f-input_schema", '{"type": "object", "properties": {"text": {"type": "string"}}}')
    _set(driver, "f-description", "Posts to the ops webhook")
    driver.find_element(By.ID, "save").click()
    saved = _wait(driver).until(lambda d: d.find_element(By.ID, "saved"))
    assert "version 2" in saved.text
    assert driver.find_element(By.ID, "version").text == "2"
    driver.find_element(By.CSS_SELECTOR, "#diff-form button").click()
    diff = _wait(driver).until(lambda d: d.find_element(By.ID, "diff"))
    assert "Posts to the ops webhook" in diff.text
    driver.save_screenshot(str(shots / "function.png"))

    driver.get(f"{base}functions/system/echo")
    payload = "<script>window.pwned = 1</script>"
    status, _ = _run(driver, json.dumps({"text": payload}))
    assert status == "completed"
    assert payload in driver.find_element(By.ID, "run-output").text
    assert driver.execute_script("return window.pwned === undefined") is True
    driver.save_screenshot(str(shots / "test-console.png"))
    driver.find_element(By.ID, "run-link").click()
    _wait(driver).until(lambda d: d.find_element(By.ID, "status").text.startswith("completed"))
    assert payload in driver.find_element(By.ID, "output").text
    assert driver.execute_script("return window.pwned === undefined") is True
    driver.save_screenshot(str(shots / "execution.png"))

    driver.get(f"{base}functions/system/fail")
    status, code = _run(driver, '{"message": "on purpose"}')
    assert (status, code) == ("failed", "function_failed")
    assert driver.find_element(By.ID, "run-message").text == "on purpose"

    driver.get(f"{base}executions?function=system/fail")
    rows = driver.find_elements(By.CSS_SELECTOR, "#executions tbody tr")
    assert len(rows) == 1
    assert "function_failed" in rows[0].text
    driver.save_screenshot(str(shots / "executions.png"))
    rows[0].find_element(By.TAG_NAME, "a").click()
    _wait(driver).until(lambda d: d.find_element(By.ID, "error-code").text == "function_failed")

    driver.get(f"{base}functions/system/echo")
    driver.find_element(By.ID, "toggle-enabled").click()
    _wait(driver).until(lambda d: "disabled" in d.find_element(By.CSS_SELECTOR, ".title").text)
    code = ""
    for _ in range(30):  # the worker's cache drops the row on NOTIFY
        status, code = _run(driver, '{"a": 1}')
        if code:
            break
    assert code == "function_disabled"

    for page in ("fleet", "dead-letters"):
        driver.get(f"{base}{page}")
        assert driver.find_element(By.TAG_NAME, "h1").text in ("Fleet", "Dead letters")
        driver.save_screenshot(str(shots / f"{page}.png"))


async def test_console_in_a_real_browser(console: Console, browser: WebDriver, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    base = str(console.client.make_url("/"))
    # Selenium blocks: it runs in a thread while this loop serves the console and the worker.
    await asyncio.to_thread(_journey, browser, base, shots)
    assert {p.name for p in shots.iterdir()} >= {"functions.png", "function.png", "execution.png"}
    # The screenshots in docs/images are this journey's:
    # FLEET_TEST_SCREENSHOTS=docs/images pytest tests/console/test_browser.py
    target = os.environ.get("FLEET_TEST_SCREENSHOTS")
    if target:
        for shot in shots.iterdir():
            shutil.copyfile(shot, Path(target) / f"console-{shot.name}")
