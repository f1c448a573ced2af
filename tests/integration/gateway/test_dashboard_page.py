"""The dashboard in headless Chromium over a FakeNodeView: it renders, asks for a key, no errors.

The page against a real testnet (and its screenshot) is in test_dashboard_testnet.py.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from p2pinfer.gateway.config import GatewayConfig
from tests.support.browser import console_errors, headless_chromium, text_of, wait_for
from tests.support.gateway import PROVIDER_B, FakeNodeView, running_gateway

KEY = "dashboard-test-key"


def _check_page(url: str) -> None:
    with headless_chromium() as driver:
        driver.get(url)
        wait_for(driver, lambda d: "live" in text_of(d, "status"), 15, "the first refresh")
        peers = text_of(driver, "peers-body")
        assert "smollm2:135m" in peers and "480.0 tok/s" in peers and "H100" in peers
        assert "open" in peers  # provider B's breaker
        jobs = text_of(driver, "jobs-body")
        assert "running" in jobs and "done" in jobs and "1,234 µcr" in jobs
        assert text_of(driver, "kpi-providers") == "2"
        assert text_of(driver, "peer-id").startswith("12D3Ko")
        assert text_of(driver, "reachability") == "private"
        assert text_of(driver, "dht-mode") == "client"
        assert "public" in peers  # provider A: a dial-back or our own dial reached it
        # The chart was drawn: the canvas is not blank.
        blank = driver.execute_script(
            "const c = document.getElementById('chart');"
            "const b = document.createElement('canvas'); b.width = c.width; b.height = c.height;"
            "return c.toDataURL() === b.toDataURL();"
        )
        assert not blank
        # Two more refreshes, still clean.
        first = text_of(driver, "status")
        wait_for(driver, lambda d: text_of(d, "status") != first, 10, "a later refresh")
        assert console_errors(driver) == []


def _check_key_form(url: str) -> None:
    from selenium.webdriver.common.by import By

    with headless_chromium() as driver:
        driver.get(url)
        wait_for(driver, lambda d: d.find_element(By.ID, "keyform").is_displayed(), 10,
                 "the API key form")  # fmt: skip
        assert text_of(driver, "peers-body") == ""  # nothing fetched without a key
        driver.find_element(By.ID, "key-input").send_keys(KEY)
        driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_for(driver, lambda d: PROVIDER_B[:6] in text_of(d, "peers-body"), 15,
                 "peers after entering the key")  # fmt: skip
        assert not driver.find_element(By.ID, "keyform").is_displayed()
        assert console_errors(driver) == []


async def _in_browser(check: Any, config: GatewayConfig) -> None:
    async with running_gateway(FakeNodeView(), config) as gw:
        with trio.fail_after(90):
            await trio.to_thread.run_sync(partial(check, gw.url + "/"))


async def test_dashboard_renders_the_node_without_console_errors() -> None:
    await _in_browser(_check_page, GatewayConfig(port=0))


async def test_dashboard_asks_for_the_key_then_shows_the_node() -> None:
    await _in_browser(_check_key_form, GatewayConfig(port=0, api_keys=(KEY,)))
