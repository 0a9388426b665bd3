"""The drawing page in a real browser: Debian's Chromium, headless, driven through Playwright.

Without Chromium or Playwright these tests skip, except under CI=true, where they fail: CI
installs Chromium (.ci/run). The server runs in a thread on a free loopback port.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from mnistlab.weights import shipped_weights

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("MNISTLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
OFFLINE_FLAGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-gpu",
    "--disable-default-apps",
    "--disable-extensions",
]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "digits"

# Ten digits as pen strokes in a unit box (x right, y down), written by hand for this test.
STROKES = {
    0: [[(0.5, 0.05), (0.25, 0.15), (0.15, 0.5), (0.25, 0.85), (0.5, 0.95), (0.75, 0.85),
         (0.85, 0.5), (0.75, 0.15), (0.5, 0.05)]],
    1: [[(0.42, 0.14), (0.55, 0.05), (0.53, 0.95)]],
    2: [[(0.2, 0.25), (0.35, 0.08), (0.65, 0.06), (0.8, 0.25), (0.7, 0.5), (0.4, 0.75),
         (0.18, 0.93), (0.85, 0.93)]],
    3: [[(0.2, 0.12), (0.5, 0.04), (0.78, 0.15), (0.75, 0.38), (0.45, 0.48), (0.8, 0.6),
         (0.82, 0.82), (0.5, 0.96), (0.18, 0.88)]],
    4: [[(0.6, 0.05), (0.15, 0.62), (0.88, 0.62)], [(0.65, 0.3), (0.65, 0.97)]],
    5: [[(0.78, 0.06), (0.28, 0.06), (0.22, 0.45), (0.55, 0.4), (0.8, 0.58), (0.78, 0.85),
         (0.48, 0.96), (0.18, 0.86)]],
    6: [[(0.7, 0.05), (0.4, 0.25), (0.22, 0.6), (0.3, 0.9), (0.6, 0.95), (0.78, 0.75),
         (0.65, 0.52), (0.35, 0.55), (0.24, 0.7)]],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.45, 0.95)]],
    8: [[(0.72, 0.18), (0.5, 0.05), (0.28, 0.18), (0.35, 0.38), (0.68, 0.6), (0.75, 0.82),
         (0.5, 0.96), (0.25, 0.82), (0.32, 0.6), (0.65, 0.38), (0.72, 0.18)]],
    9: [[(0.75, 0.3), (0.55, 0.08), (0.3, 0.15), (0.28, 0.38), (0.5, 0.48), (0.75, 0.35),
         (0.75, 0.05), (0.72, 0.95)]],
}  # fmt: skip


def browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if not Path(CHROMIUM).is_file():
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="module")
def base_url() -> str:
    pytest.importorskip("uvicorn")
    if not shipped_weights().is_file():
        pytest.skip("the shipped model weights/final.pt is not in this checkout")
    import uvicorn

    from mnistlab.web.app import Classifier, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Classifier())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    problem = browser_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run in CI: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    args = [*OFFLINE_FLAGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 900, "height": 720})
    page = context.new_page()
    # Nothing may leave the machine: any request off the server fails the test.
    outside: list[str] = []
    local = (base_url, "blob:" + base_url, "data:")
    page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
    page.goto(base_url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('parameters')")
    yield page
    context.close()
    assert outside == []


def settle(page) -> dict:
    """Wait until the page has no request out, and return what it last showed."""
    page.wait_for_function("window.mnistlab.idle() && window.mnistlab.requests() > 0")
    return page.evaluate("window.mnistlab.result()")


def draw_digit(page, strokes: list[list[tuple[float, float]]]) -> None:
    box = page.locator("#draw").bounding_box()
    margin = 0.2 * box["width"]
    side = box["width"] - 2 * margin

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + margin + x * side, box["y"] + margin * 0.6 + y * side

    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(*at(x, y), steps=6)
        page.mouse.up()


def test_drawn_digits_are_read(page):
    shown = {}
    for digit, strokes in STROKES.items():
        page.click("#clear")
        draw_digit(page, strokes)
        result = settle(page)
        shown[digit] = int(page.text_content("#digit"))
        assert result["digit"] == shown[digit]
        assert page.locator("#bars li.top").count() == 1
    right = sum(shown[d] == d for d in shown)
    print("drawn digit -> page:", shown)
    assert right >= 9, shown
    if os.environ.get("MNISTLAB_SCREENSHOT"):  # the picture in docs/web.md
        page.click("#clear")
        draw_digit(page, STROKES[4])
        settle(page)
        page.screenshot(path=os.environ["MNISTLAB_SCREENSHOT"])


def test_saliency_overlay_is_painted_and_can_be_switched_off(page):
    draw_digit(page, STROKES[7])
    settle(page)

    def tinted() -> int:
        """Pixels of the 28x28 view whose colour is not gray: the overlay's."""
        return page.evaluate(
            """() => {
              const c = document.getElementById('input');
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < d.length; i += 4)
                if (Math.abs(d[i] - d[i + 2]) > 30) n++;
              return n;
            }"""
        )

    assert tinted() > 100
    page.uncheck("#overlay")
    assert tinted() == 0


def test_undo_removes_the_last_stroke(page):
    draw_digit(page, STROKES[4])
    settle(page)
    before = page.evaluate("window.mnistlab.requests()")
    page.click("#undo")
    page.wait_for_function(f"window.mnistlab.requests() > {before} && window.mnistlab.idle()")
    assert page.text_content("#digit") != "?"  # one stroke is left and still classified
    page.click("#undo")
    assert page.text_content("#digit") == "?"


def test_uploaded_file_is_classified(page):
    page.set_input_files("#file", str(EXAMPLES / "three.jpg"))
    settle(page)
    assert page.text_content("#digit") == "3"
    assert page.locator("#error").is_hidden()


def test_bad_upload_shows_its_error_on_the_page(page, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image\n")
    page.set_input_files("#file", str(notes))
    settle(page)
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "not a readable image" in error.text_content()
    page.set_input_files("#file", str(EXAMPLES / "seven.png"))  # and the page recovers
    settle(page)
    page.wait_for_function("document.getElementById('digit').textContent === '7'")
    assert error.is_hidden()
