"""The chat page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): upload an image,
ask, see the streamed answer; boxes in an answer are drawn over the image. Skipped when Chromium is missing."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    paths = chromium_paths()
    if paths is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=paths[1]))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 90.0):
    """Poll a JavaScript expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def screenshot(driver, directory: Path, name: str) -> None:
    """Into the test's tmp dir, and into $GLMV_SCREENSHOT_DIR when set (how docs/images/ was made)."""
    for d in filter(None, (directory, os.environ.get("GLMV_SCREENSHOT_DIR"))):
        Path(d).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(d) / name))


def test_upload_ask_stream_and_draw_boxes(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    photo = tmp_path / "photo.png"
    image = Image.new("RGB", (400, 300), (240, 240, 240))
    ImageDraw.Draw(image).rectangle((100, 75, 300, 225), fill=(40, 90, 200))  # where the box below will be
    image.save(photo)
    browser.get(server.url + "/")
    wait_for(browser, "document.getElementById('model').textContent.includes('API key')")  # 401 explained
    browser.find_element(By.TAG_NAME, "summary").click()  # open Settings
    key = browser.find_element(By.ID, "api-key")
    key.send_keys(server.api_key)
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("12")
    browser.find_element(By.ID, "prompt").click()  # leaving the field fires 'change': the page loads the model
    assert wait_for(browser, "document.getElementById('model').textContent") == "tiny-glmv"

    browser.find_element(By.ID, "files").send_keys(str(photo))
    wait_for(browser, "document.querySelectorAll('#attachments img').length === 1")
    browser.find_element(By.ID, "prompt").send_keys("Where is the box? Give its coordinates.")
    browser.find_element(By.ID, "send").click()
    answer = "document.querySelector('.msg.assistant')"
    wait_for(browser, f"{answer} && {answer}.dataset.done === '1'")
    assert browser.execute_script(f"return {answer}.querySelector('.error')") is None
    usage = browser.execute_script(f"return JSON.parse({answer}.dataset.usage)")
    assert usage["completion_tokens"] >= 1 and usage["prompt_tokens"] > 16  # the image was sent
    assert browser.find_element(By.CSS_SELECTOR, ".msg.user img").get_attribute("src").startswith("data:image/png")
    streamed = browser.execute_script(f"return {answer}.querySelector('.content').textContent")
    assert streamed  # the tiny model's (random) words arrived
    screenshot(browser, tmp_path, "serve_page_streamed.png")

    # Reasoning goes into a collapsible block, closed until clicked.
    browser.execute_script(f"glmvChat.renderReasoning({answer}, 'First I look at the picture.')")
    thinking = browser.find_element(By.CSS_SELECTOR, ".msg.assistant details.thinking")
    assert thinking.is_displayed() and thinking.get_attribute("open") is None
    thinking.find_element(By.TAG_NAME, "summary").click()
    assert thinking.get_attribute("open") is not None and "look at the picture" in thinking.text

    # The box parser is the page's pure function; the tiny model's words are random, so a known answer is
    # rendered into the real answer element (attached to the uploaded image) to check the drawing.
    parsed = browser.execute_script("return glmvBoxes.parseBoxes('a <|begin_of_box|>[[100, 200, 600, 900]]"
                                    "<|end_of_box|> and (5,6,7,8)')")
    assert parsed == [[100, 200, 600, 900], [5, 6, 7, 8]]
    drawn = browser.execute_async_script(
        f"const done = arguments[0]; glmvChat.renderAnswer({answer}, "
        "'The square is at <|begin_of_box|>[[250,250,750,750]]<|end_of_box|>').then(done)")
    assert drawn == 1
    canvas = f"{answer}.querySelector('figure canvas')"
    assert browser.execute_script(f"return [{canvas}.width, {canvas}.height, {canvas}.dataset.boxes]") == [400, 300, "1"]
    # The box edge (x = 25% of 400 px) is painted red; the middle of the box stays transparent.
    pixel = f"{canvas}.getContext('2d').getImageData(%d, %d, 1, 1).data"
    edge = browser.execute_script("return Array.from(" + pixel % (100, 150) + ")")
    inside = browser.execute_script("return Array.from(" + pixel % (200, 150) + ")")
    assert edge[0] > 200 and edge[1] < 100 and edge[3] == 255 and inside[3] == 0
    text = browser.execute_script(f"return {answer}.querySelector('.content').textContent")
    assert text == "The square is at [[250,250,750,750]]"  # box tags hidden
    screenshot(browser, tmp_path, "serve_page_boxes.png")
