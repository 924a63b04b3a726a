"""The browser playground (`styleship serve --ui`), driven in a real headless Chromium.

The server runs as a user starts it (a subprocess of `styleship serve`, the
shipped demo bundle on ONNX Runtime); the browser is Debian's chromium with
its matching chromedriver, driven by selenium: nothing is downloaded at run
time. Without them the tests skip and say what to install.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, free_ports, run_cli

pytest.importorskip("pytriton", reason="the playground serves through PyTriton ('.[serve]')")
pytest.importorskip("aiohttp", reason="the playground's page server is aiohttp ('.[serve]')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

DEMO = ROOT / "assets" / "models" / "stvae-demo.stvae"
PHOTO = ROOT / "assets" / "content" / "chelsea.jpg"
WAIT_S = 120


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    """`styleship serve DEMO --ui` on free loopback ports; yields the page's URL."""
    tmp = tmp_path_factory.mktemp("playground")
    http, grpc, metrics, ui = free_ports(4)
    cmd = [sys.executable, "-m", "styleship", "serve", str(DEMO), "--backend", "ort-cpu"]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    cmd += ["--log-file", str(tmp / "triton.log"), "--ui", "--ui-port", str(ui)]
    env = {**os.environ, "STYLESHIP_CACHE": str(tmp / "cache")}
    log = open(tmp / "serve.out", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.time() + 180
        ready = f"http://127.0.0.1:{http}/v2/models/stvae-demo/ready"
        while not (_up(ready) and _up(f"http://127.0.0.1:{ui}/api/models")):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"server did not start: {(tmp / 'serve.out').read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{ui}/"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="browser tests need selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(browser, url: str):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1'")
    )


def _run_and_wait(browser) -> str:
    """Click Stylize and wait until a result or an error shows; returns the error text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    before = browser.find_element(By.ID, "result").get_attribute("src") or ""
    browser.find_element(By.ID, "run").click()

    def settled(d) -> bool:
        error = d.find_element(By.ID, "error")
        src = d.find_element(By.ID, "result").get_attribute("src") or ""
        running = d.find_element(By.ID, "run").get_attribute("disabled")
        return not running and (error.is_displayed() or (src != before and src != ""))

    WebDriverWait(browser, WAIT_S).until(settled)
    error = browser.find_element(By.ID, "error")
    return error.text if error.is_displayed() else ""


def _decode_data_url(src: str) -> np.ndarray:
    header, _, payload = src.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64"), header[:40]
    img = cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "the result is not a decodable image"
    return img


def test_upload_photo_pick_style_shows_result_and_latency(playground, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(browser, playground)
    assert Select(browser.find_element(By.ID, "model")).first_selected_option.text == "stvae-demo"
    browser.find_element(By.ID, "content-file").send_keys(str(PHOTO))
    Select(browser.find_element(By.ID, "style")).select_by_value("painting:starry_night")
    assert _run_and_wait(browser) == ""

    result = _decode_data_url(browser.find_element(By.ID, "result").get_attribute("src"))
    photo = cv2.imread(str(PHOTO))
    assert result.shape == photo.shape
    assert np.abs(result.astype(np.float32) - photo.astype(np.float32)).mean() > 10.0
    shown = browser.execute_script(
        "const r = document.getElementById('result'); return [r.naturalWidth, r.naturalHeight]"
    )
    assert shown == [photo.shape[1], photo.shape[0]]
    latency = browser.find_element(By.ID, "latency").text
    assert re.fullmatch(r"latency \d+ ms \+ style upload \d+ ms", latency), latency
    assert "ort-cpu" in browser.find_element(By.ID, "backend").text
    download = browser.find_element(By.ID, "download")
    assert download.is_displayed() and download.get_attribute("download") == "chelsea_stylized.jpg"


def test_bad_upload_is_a_message_and_the_server_keeps_working(playground, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 a JPEG header and then nothing" * 10)
    _open(browser, playground)
    browser.find_element(By.ID, "content-file").send_keys(str(bad))
    Select(browser.find_element(By.ID, "style")).select_by_value("painting:the_scream")
    error = _run_and_wait(browser)
    assert error.startswith("content image is a truncated JPEG"), error

    # the next try (a sample photo, strength below 1) still works on the same page
    Select(browser.find_element(By.ID, "sample")).select_by_value("coffee")
    browser.execute_script(
        "const a = document.getElementById('alpha'); a.value = '0.5';"
        "a.dispatchEvent(new Event('input'))"
    )
    assert browser.find_element(By.ID, "alpha-value").text == "0.50"
    assert _run_and_wait(browser) == ""
    assert not browser.find_element(By.ID, "error").is_displayed()
    coffee = cv2.imread(str(ROOT / "assets" / "content" / "coffee.jpg"))
    result = _decode_data_url(browser.find_element(By.ID, "result").get_attribute("src"))
    assert result.shape == coffee.shape


def test_page_uses_no_external_resources(playground):
    """Offline use: the page and its script and styles name no other host."""
    static = Path(__file__).resolve().parents[1] / "styleship" / "serve" / "static"
    for name in ("index.html", "app.js", "app.css"):
        text = (static / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        with urllib.request.urlopen(f"{playground}static/{name}", timeout=10) as response:
            assert response.read().decode() == text


def test_a_taken_playground_port_is_one_line_before_triton_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        http, grpc, metrics = free_ports(3)
        started = time.time()
        result = run_cli(
            "serve", DEMO, "--backend", "ort-cpu", "--http-port", http, "--grpc-port", grpc,
            "--metrics-port", metrics, "--log-file", tmp_path / "triton.log",
            "--ui", "--ui-port", port,
        )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the playground cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in lines[0]
    assert time.time() - started < 60  # refused before Triton was started
