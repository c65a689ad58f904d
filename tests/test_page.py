"""The drawing page in headless Chromium (Debian's package, driven by Playwright): digits drawn
with mouse strokes on the canvas are read on the page while drawing; Clear and photo upload work.
Screenshots are saved in the test's temporary folder (pytest prints where on failure)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

import digits
from pictures import ink_on_paper, number_picture

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed: apt-get install chromium", allow_module_level=True)
# a browser that stays offline and quiet: it talks to the test's server and nothing else
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

RING = np.linspace(0, 2 * np.pi, 40)
STROKES = {  # strokes in canvas fractions (x, y), each a list of points
    1: [[(0.5, 0.18), (0.5, 0.82)]],
    7: [[(0.28, 0.2), (0.72, 0.2), (0.44, 0.82)]],
    0: [[(0.5 + 0.2 * np.sin(a), 0.5 - 0.3 * np.cos(a)) for a in RING]],
}
VIEWPORTS = {
    "desktop": dict(viewport={"width": 1100, "height": 760}),
    "phone": dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True),
}


@contextlib.contextmanager
def serving(model: Path, port: int) -> Iterator[str]:
    """`digits serve` itself, on ``port`` of 127.0.0.1."""
    server = subprocess.Popen([sys.executable, "-m", "digits", "serve", "--model", str(model), "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "digits serve did not start"
            try:
                httpx.get(base + "/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def url(learned, free_port) -> Iterator[str]:
    with serving(learned.checkpoint, free_port()) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser, url):
    context = browser.new_context(**VIEWPORTS[request.param])
    page = context.new_page()
    errors = []  # a missing favicon, say, or a script error; not the refusals the tests ask for
    page.on("console", lambda message: errors.append(message.text) if message.type == "error"
            and not message.location.get("url", "").endswith("/predict") else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    sync_api.expect(page.locator("#model")).to_contain_text("seed")
    yield page
    context.close()
    assert not errors, errors


def draw(page, strokes: list[list[tuple[float, float]]], release: bool = True) -> None:
    box = page.locator("#pad").bounding_box()
    for k, stroke in enumerate(strokes):
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=6)
        if release or k < len(strokes) - 1:
            page.mouse.up()


def shows(page, digit: str) -> None:
    expect = sync_api.expect
    expect(page.locator("#digit")).to_have_text(digit, timeout=15_000)
    expect(page.locator("#bars li.top .label")).to_have_text(digit)
    expect(page.locator("#confidence")).to_contain_text(f"sure it is a {digit}")


def test_drawn_digits_are_read_while_drawing(page, tmp_path):
    name = "phone" if page.viewport_size["width"] < 500 else "desktop"
    for digit, strokes in STROKES.items():
        draw(page, strokes, release=False)
        shows(page, str(digit))  # the answer is there before the pen is lifted
        page.mouse.up()
        seen = page.evaluate("""() => {
            const pixels = document.getElementById("seen").getContext("2d").getImageData(0, 0, 28, 28).data;
            return pixels.filter((v, i) => i % 4 === 0 && v > 128).length; }""")
        assert seen > 20  # the 28×28 image the model saw shows the digit
        page.wait_for_timeout(300)  # let the bars finish their transition
        page.screenshot(path=tmp_path / f"{name}-{digit}.png", full_page=True)
        page.get_by_role("button", name="Clear").click()
        sync_api.expect(page.locator("#digit")).to_have_text("?")
        sync_api.expect(page.locator("#bars li.top")).to_have_count(0)
    print(f"screenshots in {tmp_path}")


def test_upload_a_photo(page, mnist, tmp_path):
    buffer = io.BytesIO()
    ink_on_paper(mnist.test.images[0].numpy(), size=600).save(buffer, "JPEG", quality=85)  # a 7
    page.set_input_files("#photo", files=[{"name": "seven.jpg", "mimeType": "image/jpeg",
                                           "buffer": buffer.getvalue()}])
    shows(page, "7")
    page.wait_for_timeout(300)
    page.screenshot(path=tmp_path / "photo.png", full_page=True)

    # Whatever the browser calls a file, the page's error is about the file, not about HTTP types.
    page.set_input_files("#photo", files=[{"name": "notes.py", "mimeType": "text/x-python", "buffer": b"x = 1"}])
    sync_api.expect(page.locator("#status")).to_contain_text("not a picture this tool can read")
    sync_api.expect(page.locator("#digit")).to_have_text("?")


def test_a_photo_of_a_number_says_how_many_digits_it_looks_like(page, mnist):
    buffer = io.BytesIO()
    number_picture([mnist.test.images[i].numpy() for i in range(4)], size=300).save(buffer, "PNG")
    page.set_input_files("#photo", files=[{"name": "year.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    sync_api.expect(page.locator("#status")).to_contain_text("This looks like 4 digits")
    buffer = io.BytesIO()
    ink_on_paper(mnist.test.images[0].numpy(), size=300).save(buffer, "PNG")
    page.set_input_files("#photo", files=[{"name": "seven.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    shows(page, "7")
    sync_api.expect(page.locator("#status")).to_have_text("")


def test_a_blank_photo_says_so(page):
    buffer = io.BytesIO()
    Image.new("L", (200, 200), 255).save(buffer, "PNG")
    page.set_input_files("#photo", files=[{"name": "blank.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    sync_api.expect(page.locator("#status")).to_contain_text("no ink")


def test_escape_clears_what_was_just_drawn(page):
    draw(page, STROKES[7])
    shows(page, "7")
    page.keyboard.press("Escape")  # no Tab first: drawing put the focus on the pad
    sync_api.expect(page.locator("#digit")).to_have_text("?")
    sync_api.expect(page.locator("#confidence")).to_have_text("Waiting for a drawing")


def test_an_error_reply_that_is_not_ours_is_shown_as_such(page):
    draw(page, STROKES[7])
    shows(page, "7")
    # A proxy's error page in front of the server: an answer, not silence, and no old answer beside it.
    page.route("**/predict", lambda route: route.fulfill(status=502, body="<h1>Bad Gateway</h1>",
                                                         content_type="text/html"))
    draw(page, STROKES[1])
    sync_api.expect(page.locator("#status")).to_have_text("The server answered 502.")
    sync_api.expect(page.locator("#digit")).to_have_text("?")
    sync_api.expect(page.locator("#bars li.top")).to_have_count(0)


def test_a_model_of_another_dataset_shows_its_own_class_names(browser, learned, mnist, free_port, tmp_path):
    fashion = list(digits.DATASETS["fashion-mnist"].classes)
    payload = digits.load_checkpoint(learned.checkpoint)
    digits.save_checkpoint(tmp_path / "model.pt", {**payload, "dataset": "fashion-mnist", "classes": fashion})
    with serving(tmp_path / "model.pt", free_port()) as base:
        page = browser.new_page()
        page.goto(base)
        sync_api.expect(page.locator("#model")).to_contain_text("on the Fashion-MNIST test set")
        sync_api.expect(page.locator("#bars .label")).to_have_text(fashion)
        buffer = io.BytesIO()
        ink_on_paper(mnist.test.images[0].numpy(), size=300).save(buffer, "PNG")  # a 7: class 7 is "Sneaker"
        page.set_input_files("#photo", files=[{"name": "seven.png", "mimeType": "image/png",
                                               "buffer": buffer.getvalue()}])
        shows(page, "Sneaker")
        page.close()
