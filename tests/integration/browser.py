"""Helpers of the browser tests of `netrain ui` (test_results, test_ui_views): a free port,
headless Chromium through selenium, and waiting on the page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def browser(size: str = "1400,900"):  # type: ignore[no-untyped-def]
    """Headless Chromium; the test fails (NETRAIN_REQUIRE_BROWSER=1, as in CI) or skips
    when it or selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        msg = (f"browser test needs {', '.join(missing)}: apt-get install chromium "
               "chromium-driver (scripts/run-tests.sh does it as root)")
        if os.environ.get("NETRAIN_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={size}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def wait(driver, cond, timeout: float = 60):  # type: ignore[no-untyped-def]
    """What ``cond(driver)`` returns once it is true (selenium's WebDriverWait)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(cond)
