"""The page at / in a real browser: headless Chromium, driven by Playwright, against a real server.

Playwright drives Debian's own chromium (`apt-get install chromium`); it never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"the page tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)
pytest.importorskip("fastapi", reason="rnnlab serve needs its extra: pip install 'rnnlab[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx: pip install 'rnnlab[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page tests need Playwright for Python "
                                                             "(pip install playwright; no browser download)")

import rnnlab  # noqa: E402
from rnnlab.inference.launch import running  # noqa: E402
from rnnlab.inference.serve import Limits, create_app  # noqa: E402

expect = sync_api.expect
# headless, and quiet: no GPU, no QUIC, no update or sync traffic to anywhere
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def url(tiny_model) -> Iterator[str]:
    lm = rnnlab.load(tiny_model)
    with running(create_app(lm, Limits(max_prompt_chars=200, max_tokens=100_000))) as url:
        yield url


@pytest.fixture(scope="module")  # not longer: Playwright's sync API keeps an event loop running in this thread
def browser() -> Iterator:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, url):
    """The page, loaded, with every URL it requests recorded in page.requested."""
    page = browser.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(url)
    expect(page.locator("#name")).to_have_text("tiny")  # the model card has arrived
    yield page
    page.close()


def count_output_updates(page) -> None:
    # one callback per batch of DOM changes: text that arrived all at once would make one or two
    page.evaluate("""() => {
        window.updates = 0;
        new MutationObserver(() => { window.updates += 1; })
            .observe(document.getElementById("output"), {childList: true, characterData: true, subtree: true});
    }""")


def test_typed_prompt_streams_generated_text_onto_the_page(page, url):
    page.fill("#prompt", "ROMEO:")
    page.fill("#length", "40000")  # a second or more at any speed: several 100 ms chunks (6,000 took 0.4 s once)
    page.fill("#seed", "7")
    count_output_updates(page)
    page.click("#generate")
    expect(page.locator("#output .prompt")).to_have_text("ROMEO:")
    expect(page.locator("#status")).to_contain_text("seed 7", timeout=30_000)
    assert page.evaluate("window.updates") >= 5

    shown = page.locator("#output").inner_text()
    body = {"prompt": "ROMEO:", "max_tokens": 40000, "temperature": 0.8, "top_p": 1, "seed": 7}
    assert shown == "ROMEO:" + httpx.post(url + "/v1/completions", json=body, timeout=30).json()["choices"][0]["text"]
    assert url + "/v1/completions" in page.requested                  # the page speaks the OpenAI API
    assert all(requested.startswith(url) for requested in page.requested), page.requested


def test_stop_button_ends_the_generation_on_the_server(page, url):
    page.fill("#prompt", "JULIET:")
    page.fill("#length", "100000")
    page.click("#generate")
    expect(page.locator("#generate")).to_have_text("Stop")
    expect(page.locator("#output")).to_contain_text("JULIET:")
    page.click("#generate")
    expect(page.locator("#status")).to_contain_text("stopped after")
    expect(page.locator("#generate")).to_have_text("Generate")
    for _ in range(100):
        if httpx.get(url + "/healthz").json()["active_generations"] == 0:
            break
        page.wait_for_timeout(50)
    assert httpx.get(url + "/healthz").json()["active_generations"] == 0

def test_server_error_message_is_shown(page):
    # the textarea keeps to the server's cap; a page left open while the server restarted with a lower one would not
    page.evaluate("document.getElementById('prompt').removeAttribute('maxlength')")
    page.fill("#prompt", "x" * 201)
    page.click("#generate")
    expect(page.locator("#status")).to_have_class("error")
    expect(page.locator("#status")).to_have_text("prompt: at most 200 characters")
