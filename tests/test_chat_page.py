"""The chat page at `/` (serve/static/) in a real browser: headless Chromium driven by Selenium types a
message, watches the reply stream in, regenerates it, stops a reply mid-stream and takes a screenshot.
Skipped where Chromium and its driver are not installed (Debian: apt-get install chromium chromium-driver)."""

import asyncio
import json
import shutil
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

import lmforge  # noqa: E402
from lmforge.serve.app import create_app  # noqa: E402
from tests.servers import serving, tiny_run  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="no Chromium here: apt-get install chromium chromium-driver")
TEXT = ["hello there, how are you today?", "i am fine, thank you, and you?", "the weather is nice"] * 20


class Recorder:
    """The app as the browser reaches it: records each chat request's JSON body, and (when `delay` is set)
    holds each streamed chunk back that long, as a slow network would."""

    def __init__(self, app):
        self.app, self.bodies, self.delay = app, [], 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        parts = []

        async def recording():
            message = await receive()
            if message["type"] != "http.request":  # the server listening for a disconnect
                return message
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                self.bodies.append(json.loads(b"".join(parts)))
            return message

        async def slowly(message):
            if message["type"] == "http.response.body" and self.delay:
                await asyncio.sleep(self.delay)
            await send(message)
        await self.app(scope, recording, slowly)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    lm = lmforge.load(tiny_run(tmp_path_factory.mktemp("page") / "tiny", TEXT, context=256))
    app = Recorder(create_app(lm, "tiny", max_batch=4))
    url, stop = serving(app)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,800", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        driver.get(url)
        yield driver, app, url
    finally:
        driver.quit()
        stop()


def wait(condition, seconds=30):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "the page did not get there in time"
        time.sleep(0.05)


def find(driver, css):
    return driver.find_elements("css selector", css)


def setting(driver, name, value):
    field = driver.find_element("id", name)
    field.clear()
    field.send_keys(value)


def idle(driver):
    return driver.find_element("id", "send").is_enabled()


def assistant_texts(driver):
    return [e.text for e in find(driver, ".message.assistant .content")]


def test_the_page_streams_a_reply_regenerates_it_and_stops(page, tmp_path):
    driver, app, url = page
    wait(lambda: driver.find_element("id", "model").text == "tiny")
    setting(driver, "system", "Be brief.")
    setting(driver, "temperature", "0")
    setting(driver, "max_tokens", "12")
    driver.find_element("id", "input").send_keys("hello <b>there</b>\n")
    wait(lambda: idle(driver) and assistant_texts(driver))
    sent = app.bodies[-1]
    assert sent["stream"] is True and sent["temperature"] == 0 and sent["max_tokens"] == 12 and sent["model"] == "tiny"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello <b>there</b>"}]
    user = find(driver, ".message.user .content")[0]
    assert user.text == "hello <b>there</b>" and "<b>" not in user.get_attribute("innerHTML")  # shown, not parsed
    whole = httpx.post(f"{url}/v1/chat/completions", json={**sent, "stream": False}, timeout=60).json()
    reply = whole["choices"][0]["message"]["content"]
    assert assistant_texts(driver) == [reply.strip()]  # what streamed in is the server's whole reply
    assert "12 tokens" in driver.find_element("id", "status").text

    asked = len(app.bodies)
    driver.find_element("id", "regenerate").click()  # greedy: the same reply again, in place of the first
    wait(lambda: len(app.bodies) == asked + 1 and idle(driver))
    assert app.bodies[-1]["messages"] == sent["messages"] and assistant_texts(driver) == [reply.strip()]

    setting(driver, "max_tokens", "40")
    app.delay = 0.15
    driver.find_element("id", "input").send_keys("and you?\n")
    wait(lambda: len(assistant_texts(driver)) == 2 and assistant_texts(driver)[1])
    driver.find_element("id", "stop-button").click()
    wait(lambda: idle(driver))
    app.delay = 0.0
    assert driver.find_element("id", "status").text == "stopped"
    assert app.bodies[-1]["messages"][-2:] == [{"role": "assistant", "content": reply},
                                               {"role": "user", "content": "and you?"}]
    shot = tmp_path / "chat.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    wait(lambda: httpx.get(f"{url}/health").json()["batch"] == 0)  # the stopped reply left the batch
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
