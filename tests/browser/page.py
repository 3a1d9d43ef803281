"""A few verbs over Selenium for the Control Panel's browser tests, with waits, not sleeps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser.panel import Panel

WAIT = 10.0


class Page:
    def __init__(self, driver: Any, panel: Panel, artifacts: Path) -> None:
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.panel, self.by = driver, panel, By
        # the script redraws tables and menus: an element may be replaced while we look
        ignored = (NoSuchElementException, StaleElementReferenceException)
        self.wait = WebDriverWait(driver, WAIT, ignored_exceptions=ignored)
        self.artifacts = artifacts
        self.shots = 0
        artifacts.mkdir(parents=True, exist_ok=True)
        for old in artifacts.glob("*.png"):
            old.unlink()

    def open(self, path: str) -> None:
        self.d.get(self.panel.url + path)

    def find(self, css: str) -> Any:
        return self.wait.until(lambda d: d.find_element(self.by.CSS_SELECTOR, css))

    def all(self, css: str) -> list[Any]:
        return list(self.d.find_elements(self.by.CSS_SELECTOR, css))

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        return self.wait.until(lambda _: condition(), message=what)

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def rows(self, table: str) -> list[str]:
        return [r.text for r in self.all(f"{table} tbody tr")]

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def choose(self, css: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        self.until(
            lambda: value in [o.get_attribute("value") for o in self.all(css + " option")],
            f"{value} offered in {css}",
        )
        Select(self.find(css)).select_by_value(value)

    def dialog_open(self) -> bool:
        return self.find("#confirm").get_attribute("open") is not None

    def shot(self, name: str) -> Path:
        self.shots += 1
        path = self.artifacts / f"{self.shots:02d}-{name}.png"
        self.d.save_screenshot(str(path))
        return path
