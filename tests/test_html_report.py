"""The HTML report, checked in a real headless Chromium (Debian: apt-get install -y chromium).

The browser is driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
JSON messages ending in NUL on file descriptors 3 and 4), so no webdriver or
websocket package is needed. Without a chromium binary the browser tests are
skipped with a warning (or fail, with EVALS_REQUIRE_BROWSER=1); everything that
does not need a browser still runs.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from qwen_evals.analysis.card import load_card
from qwen_evals.analysis.leaderboard import write
from qwen_evals.analysis.results import load_runs
from tests.conftest import REPO
from tests.test_compare import gpu_memory, run_fake_sweep, write_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage")  # fmt: skip


class Chromium:
    """A headless Chromium page driven over the DevTools pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_r, self._out = os.pipe()
        self._in, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes replies on fd 4: move the pipe ends
        # out of the way first, so the dup2 calls in the child cannot clobber each other.
        high = [os.dup2(fd, 100 + i) for i, fd in enumerate((to_browser_r, from_browser_w))]
        os.close(to_browser_r)
        os.close(from_browser_w)

        def wire() -> None:
            os.dup2(100, 3)
            os.dup2(101, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4, *high), preexec_fn=wire,  # noqa: PLW1509 (no threads here) stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for fd in high:
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(max(0.1, deadline - time.monotonic())))

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._in)
        os.close(self._out)


def chromium_binary() -> str | None:
    return os.environ.get("CHROMIUM") or next((b for b in map(shutil.which, BROWSERS) if b), None)


@pytest.fixture(scope="module")
def report(tmp_path_factory, shared_data) -> Path:
    """A report over real fake-backend runs (MMLU, C-Eval) plus a precision sweep that recorded GPU memory."""
    root = tmp_path_factory.mktemp("results")
    run_fake_sweep(root, shared_data, "model.policy=oracle,worst", "task=mmlu,ceval",
                   f"output_dir={root}/${{model.policy}}/${{hydra:runtime.choices.task}}")  # fmt: skip
    for precision, right, memory in (("bf16", 60, 16.3), ("int8", 55, 10.2), ("nf4", 48, 7.5)):
        write_run(root / "quant" / precision, [i < right for i in range(100)], model="ckpt", precision=precision,
                  memory=gpu_memory(memory))  # fmt: skip
    out = root / "report"
    write(load_runs([root]), out, load_card(), None)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium_binary()
    if binary is None:
        reason = ("chromium is not installed, so the HTML report was NOT checked in a browser; "
                  "install it (Debian: apt-get install -y chromium) or set CHROMIUM=/path/to/chrome")  # fmt: skip
        if os.environ.get("EVALS_REQUIRE_BROWSER"):
            pytest.fail(reason)
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    page = Chromium(binary, Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path_factory.mktemp("p"))))
    yield page
    page.close()


def test_pages_are_self_contained(report):
    pages = [report / "index.html", *sorted((report / "samples").glob("*.html"))]
    assert len(pages) == 1 + 4 + 3
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), page  # nothing fetched
        assert "<link" not in html and "<script src" not in html and "@import" not in html
    index = (report / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="(samples/[^"#]+)', index)
    assert len(set(links)) == 7 and all((report / link).is_file() for link in links)


def test_pages_name_no_file_outside_the_report(report, shared_data):
    """The runs' folders, the data and the checkout are local paths: the pages name runs by their run id."""
    outside = [str(report.parent), str(shared_data), str(shared_data.resolve()), str(REPO), "/tmp/", "/home/"]
    for page in [report / "index.html", *(report / "samples").glob("*.html")]:
        html = page.read_text(encoding="utf-8")
        assert not [path for path in outside if path in html], page
    assert re.search(r"\d{8}T\d{6}Z-[0-9a-f]{8}", (report / "index.html").read_text(encoding="utf-8"))


def test_index_renders_with_table_and_charts(report, browser):
    browser.open((report / "index.html").as_uri())
    charts = browser.js(
        "Array.from(document.querySelectorAll('svg.chart')).map(s => {const r = s.getBoundingClientRect();"
        " return {title: s.querySelector('title').textContent, w: r.width, h: r.height,"
        " bars: Array.from(s.querySelectorAll('rect.bar')).filter(b => b.getBBox().width > 0).length, whiskers: s.querySelectorAll('.errorbar').length,"
        " points: s.querySelectorAll('circle.point').length, reference: s.querySelectorAll('.reference').length}})"
    )
    titles = [c["title"] for c in charts]
    assert titles == ["C-Eval (accuracy)", "MMLU (accuracy)", "C-Eval chat_0shot val: by category",
                      "MMLU chat_0shot test: by category", "Score vs peak memory (hollow: card)"]  # fmt: skip
    assert all(c["w"] > 300 and c["h"] > 80 for c in charts)  # laid out, not just present in the source
    ceval, mmlu, by_category, _, memory = charts
    assert (ceval["bars"], ceval["whiskers"], ceval["reference"]) == (1, 2, 1)  # oracle 100, worst 0, card line
    assert (mmlu["bars"], mmlu["whiskers"]) == (4, 5)  # + the three precisions of ckpt
    assert by_category["bars"] == 4  # oracle's four C-Eval categories (the worst model's bars have width 0)
    assert memory["points"] == 6  # three precisions run + the card's three
    table = browser.js("Array.from(document.querySelectorAll('table')[0].rows).map(r => r.innerText)")
    assert table[0].split("\t") == ["model", "C-Eval", "C-Eval n", "MMLU", "MMLU n"]
    assert "Qwen/Qwen-7B-Chat card v1.0\t54.2\t\t53.9\t" in table
    assert browser.js("document.querySelectorAll('#parity tr.outside, h2#parity + p + div tr.outside').length") > 0


def visible(browser) -> list[str]:
    return browser.js(
        "Array.from(document.querySelectorAll('#samples tbody tr')).filter(r => r.offsetParent !== null)"
        ".map(r => r.dataset.id)"
    )


def choose(browser, mode: str) -> None:
    """Pick a filter the way a keyboard user does: focus the select, then arrow keys (real input events)."""
    order = browser.js("Array.from(document.getElementById('filter').options).map(o => o.value)")
    browser.js("document.getElementById('filter').focus()")
    for key in ["Home"] + ["ArrowDown"] * order.index(mode):
        code = {"Home": 36, "ArrowDown": 40}[key]
        for kind in ("rawKeyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=key,
                         windowsVirtualKeyCode=code)  # fmt: skip
    assert browser.js("document.getElementById('filter').value") == mode


def test_sample_view_filters_wrong_and_unparsed_answers(report, browser):
    browser.open((report / "index.html").as_uri())
    href = browser.js("Array.from(document.querySelectorAll('a.samples')).map(a => a.href)"
                      ".find(h => h.includes('ckpt-int8'))")  # fmt: skip
    browser.open(href)
    samples = [json.loads(line) for line in (report.parent / "quant" / "int8" / "samples.jsonl").open()]
    assert len(visible(browser)) == 100
    choose(browser, "wrong")
    assert visible(browser) == [s["id"] for s in samples if not s["correct"]]
    assert browser.js("document.getElementById('shown').textContent") == "45"
    choose(browser, "unparsed")
    assert visible(browser) == [s["id"] for s in samples if s["parse_status"] == "unparsed"]
    assert browser.js("location.hash") == "#filter=unparsed"
    browser.js("document.getElementById('search').focus()")
    browser.call("Input.insertText", session=True, text="q009")
    assert visible(browser) == [s["id"] for s in samples if s["parse_status"] == "unparsed" and "q009" in s["id"]]


def test_links_open_the_sample_view_already_filtered(report, browser):
    page = next((report / "samples").glob("mmlu-chat_0shot-fake-worst-*.html"))
    browser.open(page.as_uri() + "#filter=unparsed")
    assert browser.js("document.getElementById('filter').value") == "unparsed"
    shown = visible(browser)
    assert len(shown) == 57 and shown[0] == "abstract_algebra/0"
    row = browser.js("Array.from(document.querySelector('#samples tbody tr').cells).map(c => c.textContent)")
    assert row[0] == "abstract_algebra/0" and row[4] in "ABCD" and row[5:7] == ["no", "unparsed"]
    assert "The following is a multiple-choice question" in row[1]
