"""The web page in a real browser: headless Chromium (Debian's) under Selenium, against a
real gateway over the real model server, with Redis for feedback and, when installed,
a Prometheus that scrapes the gateway and evaluates the project's recording rules.

What a person does, the test does: draw with a mouse, a pen and a finger (pointer
events), upload files, press the feedback buttons, type an API key. Each check compares
what the page shows with what the API answers for the same bytes. Screenshots of the
main states, at desktop and phone widths, go to reports/ui/ (git-ignored).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.browser import DESKTOP, PHONE, save_screenshot
from tests.fixtures.gateway import Gateway, launch_gateway
from tests.fixtures.monitoring import Prometheus, find_binary, start_prometheus_process
from tests.fixtures.processes import free_port, wait_until
from tests.gateway.images import photographed_mnist, white_webp

pytestmark = pytest.mark.slow

MODEL = "mnist"
TIMEOUT = 20
# A 7 as two strokes, in CSS pixels from the centre of the 280 px drawing pad.
SEVEN = (
    ((-75, -85), (0, -85), (75, -85)),
    ((75, -85), (45, -20), (15, 45), (0, 100)),
)
# What the page shows, read in one script: the bars' heights as a share of their track,
# the 28x28 canvas of what the model saw (gray levels), and the feedback line.
READ_RESULT = """
const items = [...document.querySelectorAll('#bars .bar-item')];
const seen = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
const result = document.getElementById('result');
return {
  digit: document.getElementById('digit').textContent,
  confidence: document.getElementById('confidence').textContent,
  answeredBy: document.getElementById('answered-by').textContent,
  heights: items.map(i => i.querySelector('.bar').getBoundingClientRect().height
                          / i.querySelector('.bar-track').clientHeight),
  predicted: items.map(i => i.classList.contains('predicted')),
  truth: items.map(i => i.classList.contains('truth')),
  seen: Array.from({length: 784}, (_, k) => seen[k * 4]),
  sentWidth: document.getElementById('sent').naturalWidth,
  predictionId: result.dataset.predictionId,
  source: result.dataset.source,
  strokes: result.dataset.strokes,
};
"""


# WCAG 2 contrast of every visible piece of text against the background it is drawn on:
# the texts under 4.5:1 (3:1 for large text).
LOW_CONTRAST = """
const rgba = c => c.match(/[\\d.]+/g).map(Number);
const luminance = ([r, g, b]) => {
  const f = v => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = element => {
  for (let e = element; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c;
  }
  return [255, 255, 255];
};
const low = [];
for (const element of document.querySelectorAll('body *')) {
  if (element.offsetParent === null || element.closest('.visually-hidden')) continue;
  const text = [...element.childNodes].filter(n => n.nodeType === 3)
    .map(n => n.textContent).join('').trim();
  if (!text) continue;
  const style = getComputedStyle(element);
  const [light, dark] = [luminance(rgba(style.color)), luminance(background(element))]
    .sort((a, b) => b - a);
  const ratio = (light + 0.05) / (dark + 0.05);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) low.push(`${element.tagName}#${element.id} ${text} ${ratio}`);
}
return low;
"""


# Drops a file on the input panel: arguments are its bytes (base64), name and type.
DROP = """
const [data, name, type] = arguments;
const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
const files = new DataTransfer();
files.items.add(new File([bytes], name, {type}));
const panel = document.getElementById('input-panel');
for (const kind of ['dragenter', 'dragover', 'drop']) {
  panel.dispatchEvent(new DragEvent(kind, {dataTransfer: files, bubbles: true, cancelable: true}));
}
"""


@dataclasses.dataclass
class PageStack:
    """The gateway the page is served by, and the Prometheus it reads (None if missing)."""

    gateway: Gateway
    prometheus: Prometheus | None

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def page_stack(model_server, redis_server, tmp_path_factory) -> Iterator[PageStack]:
    """A gateway with Redis, and a Prometheus on a port chosen first, so the gateway can
    be given GATEWAY_PROMETHEUS_URL before either starts."""
    workdir = tmp_path_factory.mktemp("webpage")
    settings: dict[str, object] = {"redis_url": redis_server.url}
    prometheus_port = free_port() if find_binary("PROMETHEUS_BIN", "prometheus") else None
    if prometheus_port is not None:
        settings["prometheus_url"] = f"http://127.0.0.1:{prometheus_port}"
    gateway = launch_gateway(workdir, model_server.grpc_target, **settings)
    prometheus = None
    try:
        if prometheus_port is not None:
            prometheus = start_prometheus_process(
                workdir / "prometheus",
                {"gateway": f"127.0.0.1:{gateway.port}"},
                port=prometheus_port,
            )
        yield PageStack(gateway, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        gateway.process.stop()


def browser_wait(browser, condition, message: str, timeout: float = TIMEOUT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition, message)


def by_id(browser, element_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def open_page(browser, url: str, size: tuple[int, int] = DESKTOP, ready: bool = True) -> None:
    """Load the page at a window size; with `ready`, wait for the status strip's versions."""
    browser.set_window_size(*size)
    browser.get(f"{url}/")
    if ready:
        browser_wait(
            browser,
            lambda b: by_id(b, "models-status").text.startswith("Versions:"),
            "the status strip never listed the versions",
        )


def draw(browser, strokes, kind: str) -> None:
    """Draw `strokes` on the pad with a pointer of `kind` (mouse, pen or touch)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    pad = by_id(browser, "pad")
    actions = ActionBuilder(browser, mouse=PointerInput(kind, kind), duration=40)
    for (x, y), *path in strokes:
        actions.pointer_action.move_to(pad, x, y).pointer_down()
        for x, y in path:
            actions.pointer_action.move_to(pad, x, y)
        actions.pointer_action.pointer_up()
    actions.perform()


def read_result(browser) -> dict[str, Any]:
    return browser.execute_script(READ_RESULT)


def wait_for_result(browser, **expected: str) -> dict[str, Any]:
    """Wait until a result is shown whose data-* attributes have the `expected` values
    and no request is in flight; return what it shows."""

    def shown(b) -> dict[str, Any] | bool:
        if not by_id(b, "result").is_displayed() or by_id(b, "busy").is_displayed():
            return False
        result = read_result(b)
        return result if all(result[k] == v for k, v in expected.items()) else False

    return browser_wait(browser, shown, f"no result with {expected}")


def wait_for_error(browser) -> str:
    browser_wait(browser, lambda b: by_id(b, "error").is_displayed(), "no error was shown")
    return by_id(browser, "error").text


def api_predict(url: str, data: bytes, filename: str, content_type: str) -> httpx.Response:
    """What the API answers for the same file, with the image the model saw."""
    return httpx.post(
        f"{url}/v1/models/{MODEL}/predict/image?return_input=true",
        files={"file": (filename, data, content_type)},
        timeout=30,
    )


def feedback_total(url: str) -> float:
    """Sum of gateway_feedback_total over its labels, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(value) for value in re.findall(r"^gateway_feedback_total\{[^}]*\} (\S+)$", text, re.M)
    )


def assert_shows(shown: dict[str, Any], answer: dict[str, Any]) -> None:
    """The page shows the API's prediction: digit, confidence, bars, the 28x28 input."""
    prediction = answer["predictions"][0]
    assert shown["digit"] == str(prediction["class"])
    confidence = float(re.search(r"([\d.]+)%", shown["confidence"])[1])
    assert confidence == pytest.approx(prediction["confidence"] * 100, abs=0.06)
    # 1 px of the 140 px track is 0.007.
    assert shown["heights"] == pytest.approx(prediction["probabilities"], abs=0.01)
    assert shown["predicted"] == [i == prediction["class"] for i in range(10)]
    seen = np.array(shown["seen"], dtype=float)
    expected = np.round(np.array(prediction["input"]).ravel() * 255)
    assert np.abs(seen - expected).max() <= 1
    assert f"version {answer['version']}" in shown["answeredBy"]
    assert shown["sentWidth"] > 0, "the image sent is not shown"


def assert_readable(browser) -> None:
    """Every visible text has enough contrast to read."""
    assert browser.execute_script(LOW_CONTRAST) == []


def assert_fits(browser) -> None:
    """Nothing is wider than the window: no sideways scrolling, at any width."""
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1], widths


@pytest.fixture(scope="module")
def digit_png(mnist_test_images, tmp_path_factory) -> tuple[Path, int]:
    """A photo-like PNG of a real held-out MNIST digit: dark ink on grainy, unevenly lit
    paper, upscaled and turned a little. Returns the file and the digit's true label."""
    images, labels = mnist_test_images
    path = tmp_path_factory.mktemp("uploads") / "photo-of-a-digit.png"
    path.write_bytes(photographed_mnist(images[3], scale=8, angle=6, quality=95, fmt="PNG"))
    return path, int(labels[3])


@pytest.mark.parametrize(
    ("kind", "size", "screen"),
    [("mouse", DESKTOP, "desktop"), ("pen", DESKTOP, "desktop"), ("touch", PHONE, "phone")],
)
def test_drawing_a_seven_shows_the_prediction_and_bars_of_the_api_probabilities(
    browser, page_stack: PageStack, kind: str, size, screen: str
) -> None:
    open_page(browser, page_stack.url, size)
    draw(browser, SEVEN, kind)
    shown = wait_for_result(browser, source="drawing", strokes="2")
    # The bytes the page sent are the pad's PNG: the API's answer for them is the truth.
    data_url = browser.execute_script("return document.getElementById('pad').toDataURL()")
    png = base64.b64decode(data_url.split(",", 1)[1])
    answer = api_predict(page_stack.url, png, "drawing.png", "image/png")
    assert answer.status_code == 200, answer.text
    assert_shows(shown, answer.json())
    assert_fits(browser)
    save_screenshot(browser, f"drawing-{kind}-{screen}")


def test_the_page_loads_nothing_from_elsewhere_and_labels_every_control(
    browser, page_stack: PageStack
) -> None:
    open_page(browser, page_stack.url)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources and all(name.startswith(page_stack.url) for name in resources), resources
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select')]"
        ".filter(e => e.labels.length === 0).map(e => e.id)"
    )
    assert unlabelled == []
    nameless = browser.execute_script(
        "return [...document.querySelectorAll('button')].filter(b => "
        "!(b.getAttribute('aria-label') || b.textContent).trim()).map(b => b.outerHTML)"
    )
    assert nameless == []
    assert_readable(browser)
    save_screenshot(browser, "empty-desktop")


def test_with_the_keyboard_an_empty_pad_gets_the_gateways_no_ink_message(
    browser, page_stack: PageStack
) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(browser, page_stack.url)
    by_id(browser, "predict-drawing").send_keys(Keys.ENTER)
    shown = wait_for_error(browser)
    blank = browser.execute_script("return document.getElementById('pad').toDataURL()")
    answer = api_predict(
        page_stack.url, base64.b64decode(blank.split(",", 1)[1]), "drawing.png", "image/png"
    )
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "no_ink"
    assert shown == answer.json()["error"]["message"]


@pytest.mark.parametrize(("size", "screen"), [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_uploading_a_photo_shows_the_prediction_and_what_the_model_saw_and_a_non_image_the_error(
    browser, page_stack: PageStack, digit_png, tmp_path: Path, size, screen: str
) -> None:
    path, _ = digit_png
    open_page(browser, page_stack.url, size)
    by_id(browser, "file").send_keys(str(path))
    shown = wait_for_result(browser, source="file")
    answer = api_predict(page_stack.url, path.read_bytes(), path.name, "image/png")
    assert answer.status_code == 200, answer.text
    assert_shows(shown, answer.json())
    assert_fits(browser)
    save_screenshot(browser, f"upload-{screen}")

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture of a digit\n")
    by_id(browser, "file").send_keys(str(notes))
    shown_error = wait_for_error(browser)
    refused = api_predict(page_stack.url, notes.read_bytes(), notes.name, "text/plain")
    assert refused.status_code == 422
    assert shown_error == refused.json()["error"]["message"]
    assert not by_id(browser, "result").is_displayed()
    assert_fits(browser)
    assert_readable(browser)
    save_screenshot(browser, f"error-{screen}")


def drop_file(browser, data: bytes, name: str, content_type: str) -> None:
    """Drop a file on the input panel, the events a drag from the desktop ends with."""
    browser.execute_script(DROP, base64.b64encode(data).decode(), name, content_type)


def test_dropping_files_predicts_them_and_a_too_large_image_gets_the_gateways_words(
    browser, page_stack: PageStack, digit_png
) -> None:
    path, _ = digit_png
    open_page(browser, page_stack.url)
    drop_file(browser, path.read_bytes(), path.name, "image/png")
    shown = wait_for_result(browser, source="file")
    assert_shows(
        shown, api_predict(page_stack.url, path.read_bytes(), path.name, "image/png").json()
    )

    huge = white_webp(2100)  # 4.4 megapixels once decoded: over the gateway's 4
    drop_file(browser, huge, "scan.webp", "image/webp")
    shown_error = wait_for_error(browser)
    refused = api_predict(page_stack.url, huge, "scan.webp", "image/webp")
    assert refused.status_code == 413
    assert shown_error == refused.json()["error"]["message"]


def test_with_the_model_server_gone_the_page_says_so_in_words(
    browser, start_gateway, digit_png
) -> None:
    path, _ = digit_png
    gateway = start_gateway(f"127.0.0.1:{free_port()}", wait="healthy")  # nothing there
    open_page(browser, gateway.url, ready=False)
    status = by_id(browser, "models-status")
    browser_wait(
        browser, lambda b: status.text.startswith("Versions unavailable: "), "no word on versions"
    )
    by_id(browser, "file").send_keys(str(path))
    shown_error = wait_for_error(browser)
    refused = api_predict(gateway.url, path.read_bytes(), path.name, "image/png")
    assert refused.status_code == 503
    assert shown_error == refused.json()["error"]["message"]
    models = httpx.get(f"{gateway.url}/v1/models", timeout=10)
    assert models.status_code == 503
    assert status.text == f"Versions unavailable: {models.json()['error']['message']}"
    save_screenshot(browser, "model-unavailable-desktop")


def test_feedback_is_counted_once_and_the_page_shows_the_duplicate(
    browser, page_stack: PageStack, digit_png
) -> None:
    path, label = digit_png
    open_page(browser, page_stack.url)
    by_id(browser, "file").send_keys(str(path))
    shown = wait_for_result(browser, source="file")
    before = feedback_total(page_stack.url)
    button = (
        by_id(browser, "correct")
        if shown["digit"] == str(label)
        else browser.find_element("css selector", f'#feedback [data-label="{label}"]')
    )
    button.click()
    status = by_id(browser, "feedback-status")
    browser_wait(browser, lambda b: "counted" in status.get_attribute("class"), "not counted")
    assert status.text.startswith("Counted:"), status.text
    assert read_result(browser)["truth"] == [i == label for i in range(10)]
    assert feedback_total(page_stack.url) == before + 1
    assert_readable(browser)

    button.click()
    browser_wait(browser, lambda b: "refused" in status.get_attribute("class"), "no refusal")
    again = httpx.post(
        f"{page_stack.url}/v1/feedback",
        json={"prediction_id": shown["predictionId"], "label": label},
        timeout=10,
    )
    assert again.status_code == 409
    assert status.text == again.json()["error"]["message"]
    assert feedback_total(page_stack.url) == before + 1
    save_screenshot(browser, "feedback-duplicate-desktop")


def predict_and_confirm(url: str, instances: list) -> None:
    """Predictions, then 'correct' feedback for each, through the API."""
    predictions = httpx.post(
        f"{url}/v1/models/{MODEL}/predict", json={"instances": instances}, timeout=30
    ).json()["predictions"]
    items = [{"prediction_id": p["prediction_id"], "label": p["class"]} for p in predictions]
    assert httpx.post(f"{url}/v1/feedback", json=items, timeout=10).status_code == 200


def wait_for_accuracy(url: str) -> None:
    """Until the gateway's accuracy route answers a figure for some version."""

    def answered() -> bool:
        body = httpx.get(f"{url}/v1/models/{MODEL}/accuracy", timeout=10).json()
        return any(row["accuracy"] is not None for row in body["versions"])

    wait_until(answered, TIMEOUT, message="the gateway's online accuracy")


def test_the_status_strip_shows_versions_labels_and_online_accuracy(
    browser, page_stack: PageStack, mnist_test_images
) -> None:
    """Online accuracy comes from Prometheus' recording rule through the gateway; without
    Prometheus the strip says why there is none. The README's screenshot is taken here."""
    images = (mnist_test_images[0][:4] / 255.0).tolist()
    prometheus = page_stack.prometheus
    if prometheus is not None:
        # rate() needs the counters to rise after Prometheus first saw them.
        predict_and_confirm(page_stack.url, images[:2])
        prometheus.wait_for('gateway_feedback_total{outcome="correct"}')
        predict_and_confirm(page_stack.url, images[2:])
        prometheus.wait_for_finite("model_version:gateway_online_accuracy:ratio_rate5m")
        # The gateway caches its answer for 5 s; the page must not wait for its next poll.
        wait_for_accuracy(page_stack.url)
    open_page(browser, page_stack.url)
    assert re.match(r"Versions: mnist: v\d+ available", by_id(browser, "models-status").text)
    accuracy = by_id(browser, "accuracy-status")
    if prometheus is None:
        expected = "Online accuracy: online accuracy needs Prometheus: set GATEWAY_PROMETHEUS_URL"
        browser_wait(browser, lambda b: accuracy.text == expected, "no word on the accuracy")
        return
    browser_wait(
        browser,
        lambda b: re.match(
            r"Online accuracy, last 5 minutes: v1 [\d.]+% \(about \d+ labels\)", accuracy.text
        ),
        "no online accuracy in the status strip",
    )
    draw(browser, SEVEN, "mouse")
    wait_for_result(browser, source="drawing", strokes="2")
    save_screenshot(browser, "readme-desktop")


def test_with_api_keys_the_page_asks_for_a_key_and_keeps_it_for_the_tab_only(
    browser, model_server, start_gateway, digit_png
) -> None:
    from selenium.webdriver.common.keys import Keys

    gateway = start_gateway(model_server.grpc_target, api_keys="page-key-1,page-key-2")
    open_page(browser, gateway.url, ready=False)
    form, field = by_id(browser, "key-form"), by_id(browser, "key-input")
    browser_wait(browser, lambda b: form.is_displayed(), "the page did not ask for a key")
    assert browser.switch_to.active_element == field
    save_screenshot(browser, "api-key-desktop")

    field.send_keys("not-a-key", Keys.ENTER)
    message = by_id(browser, "key-message")
    browser_wait(browser, lambda b: "did not accept" in message.text, "a wrong key passed")
    field.send_keys("page-key-2", Keys.ENTER)
    browser_wait(
        browser,
        lambda b: by_id(b, "models-status").text.startswith("Versions:"),
        "the right key did not open the API",
    )
    assert not form.is_displayed()
    by_id(browser, "file").send_keys(str(digit_png[0]))
    wait_for_result(browser, source="file")
    stored = browser.execute_script(
        "return [sessionStorage.getItem('mnist-gateway-api-key'), localStorage.length, "
        "document.cookie]"
    )
    assert stored == ["page-key-2", 0, ""]
