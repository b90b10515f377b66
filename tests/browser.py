"""A headless Chromium for tests of fxexport's HTML pages (Debian's ``chromium`` + ``chromium-driver``).

Selenium drives ``/usr/bin/chromedriver``, given explicitly (without it selenium would try to
download a driver); the browser runs headless, offline-minded (no background networking,
component updates, sync or QUIC) with a fresh profile. Under ``CI=true`` a missing browser
fails the test; elsewhere the test is skipped with the reason :data:`SKIP_REASON`.

Screenshots go to ``build/browser/`` for people to look at; tests assert the DOM, not pixels.

Use it from a test module::

    @pytest.fixture(scope="module")
    def browser():
        with open_browser() as b:
            yield b
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "build" / "browser"
SKIP_REASON = "install Debian's chromium and chromium-driver"
ARGUMENTS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             "--window-size=1400,900")


def missing() -> str | None:
    """What is missing to run the browser tests, or None."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401 - only whether it is installed
    except ImportError:
        absent.append("the selenium package")
    return ", ".join(absent) or None


def require_browser() -> None:
    """Skip (or under CI=true fail) the calling test when the browser cannot run."""
    what = missing()
    if what is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} not found under CI=true: {SKIP_REASON} (.ci/run installs them)")
    pytest.skip(SKIP_REASON)


class Browser:
    """One Chromium session: open a file, type, click, read the DOM, console errors, screenshots."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, path: str | os.PathLike) -> None:
        """Load a local file and wait until the page's script has run (``data-ready`` set, when it has one)."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(Path(path).resolve().as_uri())
        WebDriverWait(self.driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        if self.driver.execute_script("return !!document.querySelector('script:not([type])')"):
            WebDriverWait(self.driver, 30).until(
                lambda d: d.execute_script("return document.documentElement.getAttribute('data-ready')") == "1")

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def type(self, css: str, text: str) -> None:
        """Type ``text`` into an input as keystrokes (each one fires the page's ``input`` handler)."""
        element = self.find(css)
        element.click()
        element.send_keys(text)

    def clear(self, css: str) -> None:
        """Empty an input and fire its ``input`` event, as deleting the text would."""
        self.js("var e = document.querySelector(arguments[0]); e.value = '';"
                "e.dispatchEvent(new Event('input', {bubbles: true}));", css)

    def console_errors(self) -> list[dict]:
        """Console messages of level SEVERE since the last call (script errors, CSP violations, failed loads)."""
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def alert_text(self) -> str | None:
        """The text of an open alert() dialog, or None."""
        from selenium.common.exceptions import NoAlertPresentException

        try:
            return self.driver.switch_to.alert.text
        except NoAlertPresentException:
            return None

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the window under build/browser/ and return its path."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@contextlib.contextmanager
def open_browser() -> Iterator[Browser]:
    """A fresh headless Chromium (own ``--user-data-dir``), quit and cleaned up afterwards."""
    require_browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager, should anything call it: no downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fxexport-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ARGUMENTS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
