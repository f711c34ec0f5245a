"""A headless Chromium driven over the W3C WebDriver protocol (Debian's chromium and
chromium-driver; `make browser` installs them). Only what the website's tests need."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from medbench_devstack.ports import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Without the background-networking flags Chromium keeps dialling out of a closed network.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TAB = "\ue004"


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver process and one browser session."""

    def __init__(self, profile: Path) -> None:
        for path in (CHROMIUM, CHROMEDRIVER):
            if not path.exists():
                raise WebDriverError(f"{path} is missing: `make browser` installs it")
        port = free_port()
        self._driver = subprocess.Popen(
            [str(CHROMEDRIVER), f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise WebDriverError("chromedriver did not become ready in 30 s")
            time.sleep(0.1)
        options = {"binary": str(CHROMIUM), "args": [*FLAGS, f"--user-data-dir={profile}"]}
        session = self._call(
            "POST",
            "/session",
            {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}},
            session=False,
        )
        self._session = session["sessionId"]

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, session: bool = True
    ) -> Any:
        url = f"/session/{self._session}{path}" if session else path
        response = self._http.request(method, url, json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message')}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._call("GET", "/url"))

    def js(self, script: str, *args: Any) -> Any:
        """Runs ``script`` (a function body; ``arguments`` holds args) and returns its value."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def text(self, selector: str) -> str:
        return str(
            self.js(
                "const e = document.querySelector(arguments[0]);"
                "return e === null ? null : e.textContent;",
                selector,
            )
        )

    def click(self, selector: str) -> None:
        found = self._call("POST", "/element", {"using": "css selector", "value": selector})
        self._call("POST", f"/element/{found[ELEMENT]}/click", {})

    def press(self, key: str) -> None:
        self._call(
            "POST",
            "/actions",
            {
                "actions": [
                    {
                        "type": "key",
                        "id": "keyboard",
                        "actions": [
                            {"type": "keyDown", "value": key},
                            {"type": "keyUp", "value": key},
                        ],
                    }
                ]
            },
        )

    def press_and_load(self, key: str, timeout_s: float = 30) -> None:
        """Presses key where it submits a form or follows a link, and waits until the next page
        has loaded: WebDriver's key actions return before the navigation they start ends."""
        self.js("window.__medbenchBefore = true;")
        self.press(key)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(WebDriverError):  # the old page is going away
                if self.js(
                    "return window.__medbenchBefore === undefined"
                    " && document.readyState === 'complete';"
                ):
                    return
            time.sleep(0.05)
        raise AssertionError(f"no new page loaded within {timeout_s} s of pressing {key!r}")

    def viewport(self, width: int, height: int, mobile: bool) -> None:
        """Emulates a device's viewport (Chrome DevTools' device metrics)."""
        self._call(
            "POST",
            "/goog/cdp/execute",
            {
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {
                    "width": width,
                    "height": height,
                    "deviceScaleFactor": 2 if mobile else 1,
                    "mobile": mobile,
                },
            },
        )

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def close(self) -> None:
        try:
            if getattr(self, "_session", None):
                self._http.delete(f"/session/{self._session}")
        finally:
            self._http.close()
            self._driver.terminate()
            try:
                self._driver.wait(10)
            except subprocess.TimeoutExpired:
                self._driver.kill()
                self._driver.wait(10)
