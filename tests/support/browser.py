"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by selenium, for page tests.

Nothing is downloaded: the browser and its driver come from apt (scripts/setup-browser).
`chromium_or_skip()` skips a test with the reason when they are missing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_or_skip() -> tuple[str, str]:
    """(browser, driver) paths; skips the test, saying what is missing, if not installed."""
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromium-driver", driver))
                               if p is None)  # fmt: skip
        pytest.skip(f"{missing} not installed and scripts/setup-browser could not install it "
                    "(needs root and Debian's archive)")  # fmt: skip
    return browser, driver


@contextmanager
def headless_chromium(width: int = 1440, height: int = 1000, extra_args: tuple[str, ...] = ()
                      ) -> Iterator[Any]:  # fmt: skip
    """A selenium Chrome driver on headless Chromium that records the console
    (`extra_args`: more command-line switches, e.g. `--host-resolver-rules=...`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", *extra_args):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def full_page_screenshot(driver: Any, path: str) -> None:
    """Save the whole page (not just the window) as a PNG at `path`."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    width = int(driver.execute_script("return document.documentElement.clientWidth"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
    try:
        driver.save_screenshot(path)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def console_errors(driver: Any) -> list[str]:
    """The page's console errors (and failed loads) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE"]  # fmt: skip


def wait_for(driver: Any, predicate: Callable[[Any], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate(driver)` until true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate(driver):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def text_of(driver: Any, element_id: str) -> str:
    """The visible text of the element with `element_id`."""
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)
