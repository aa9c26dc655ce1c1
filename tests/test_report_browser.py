"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``) driven over the DevTools protocol
on a pipe (``--remote-debugging-pipe``: no port, no websocket library). The report, the model card and the
comparison must each load with no console error, no exception, no failed or network request, and every image
decoded; a full-page screenshot of each is saved in the test's tmp dir (``report.png``, ``card.png``,
``compare.png``). Skipped when chromium is absent (``sh tools/install_browser.sh`` installs it)."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from synthetic_run import Plant, synthetic_run

from reports.analysis import Settings
from reports.card import write_card
from reports.compare_report import write_compare
from reports.report import write_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")
SETTINGS = Settings(n_boot=200)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (sh tools/install_browser.sh)")


class DevTools:
    """A Chromium process and its DevTools pipe (commands on fd 3, replies and events on fd 4, NUL-framed)."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()

        def wire() -> None:  # in the child, before exec
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.proc = subprocess.Popen([BROWSER, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4),
                                     preexec_fn=wire)
        os.close(to_browser)
        os.close(from_browser)
        self.buffer, self.events, self.next_id = b"", [], 0

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)


def problems(events: list[dict]) -> list[str]:
    """Console errors, exceptions, failed loads and any request that is not data: or file:."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"failed load: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("data:", "file:")):
                found.append(f"network request: {url}")
    return found


IMAGES = ("JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
          "width: i.naturalWidth, height: i.naturalHeight})))")


def load(browser: DevTools, session: str, page: Path, screenshot: Path) -> dict:
    """Open ``page``; returns its title, images and problems, and saves a full-page screenshot."""
    browser.events.clear()
    browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
    browser.wait_for("Page.loadEventFired")

    def evaluate(expression: str):
        return browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                            session)["result"]["value"]

    size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
        "x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 12000), "scale": 1}}, session)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return {"title": evaluate("document.title"), "images": json.loads(evaluate(IMAGES)),
            "problems": problems(list(browser.events))}


def test_report_card_and_comparison_render_in_chromium(tmp_path):
    fair = synthetic_run(tmp_path / "fair", inputs=70, samples=2, ucpr=2, plant=Plant(to_white={}, ita_shift={}))
    biased = synthetic_run(tmp_path / "biased", inputs=70, samples=2, seed=1)
    pages = {"report": write_report(biased, tmp_path / "report", SETTINGS)["html"],
             "card": write_card([biased], tmp_path / "card", None, SETTINGS)[0]["html"],
             "compare": write_compare([fair, biased], tmp_path / "compare", SETTINGS)["html"]}
    browser = DevTools(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        seen = {name: load(browser, session, page, tmp_path / f"{name}.png") for name, page in pages.items()}
    finally:
        browser.close()
    assert seen["report"]["title"].startswith("pulse-audit report")
    assert seen["card"]["title"].startswith("Model card") and seen["compare"]["title"].startswith("pulse-audit compar")
    for name, page in pages.items():
        result = seen[name]
        assert result["problems"] == [], name
        assert len(result["images"]) == page.read_text().count("<img ") >= (8 if name == "report" else 2), name
        assert [i["alt"] for i in result["images"] if not i["complete"] or i["width"] * i["height"] == 0] == []
        shot = (tmp_path / f"{name}.png").read_bytes()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
