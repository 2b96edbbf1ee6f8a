"""The review console in a real browser: headless Chromium driven by selenium, against the local
stack (a moto server on 127.0.0.1 with the template's resources, the real handler with a tiny
model whose review threshold sends every photo to NEEDS_REVIEW).

The page lists the queue, one keystroke decides and the DynamoDB item changes, the photo leaves
the queue, Undo restores it, a decision on a photo uploaded again meanwhile is refused, and a key
with HTML in it stays text. It measures decisions per minute through the page and prints it.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing); the
test is skipped, saying so, where they are not installed. Screenshots go to
``test-output/review/`` (or ``$MOMEE_TEST_OUTPUT/review/``); with ``REVIEW_SCREENSHOT_DOCS=1`` the
README's ``docs/review-console.png`` is refreshed too.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import numpy as np
import pytest
from botocore.config import Config

from contracts.catalogue import CategorySource, ReviewOutcome, Status
from contracts.catalogue_table import read_item
from handler import app
from local_stack.resources import LocalResources, create_local_resources
from local_stack.stack import REGION, LocalContext, drain_queue, moto_server
from review.console import Console, image_origin
from review.decisions import queue_length
from review.server import ReviewServer
from sample_data.photos import LABELS, draw_sample_image
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.e2e
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HOSTILE_KEY = "uploads/<img src=x onerror=window.__pwned=1>.jpg"
PHOTOS = 12
T = TypeVar("T")


def jpeg(label: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    draw_sample_image(label, np.random.default_rng(seed), size=480).save(buffer, format="JPEG")
    return buffer.getvalue()


def output_dir() -> Path:
    folder = Path(os.environ.get("MOMEE_TEST_OUTPUT") or REPOSITORY_ROOT / "test-output") / "review"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Stack:
    s3: Any
    sqs: Any
    dynamodb: Any
    resources: LocalResources

    def upload(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.resources.bucket, Key=key, Body=data)

    def drain(self) -> None:
        stats = drain_queue(
            self.sqs,
            self.resources.queue_url,
            lambda event: app.lambda_handler(event, LocalContext()),
        )
        assert stats.returned == 0

    def item(self, key: str) -> Any:
        return read_item(self.dynamodb, self.resources.table_name, self.resources.bucket, key)

    def remaining(self) -> int:
        return queue_length(self.dynamodb, self.resources.table_name)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    publish_tiny_artifact(tmp_path, review_threshold=0.99)  # every photo needs a person
    with moto_server() as endpoint:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_METRICS_DISABLED": "true",
            "MODEL_URI": str(tmp_path),
        }.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
        sqs, dynamodb = boto3.client("sqs"), boto3.client("dynamodb")
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        monkeypatch.setenv("CATALOGUE_TABLE", resources.table_name)
        app.reset_worker()
        running = Stack(s3, sqs, dynamodb, resources)
        for index in range(PHOTOS - 1):
            running.upload(f"uploads/shop/{index:02d}.jpg", jpeg(LABELS[index], index))
        running.upload(HOSTILE_KEY, jpeg("bouncer", 99))  # the newest: shown last
        running.drain()
        yield running
        app.reset_worker()


@pytest.fixture
def console_url(stack: Stack) -> Iterator[str]:
    console = Console(
        dynamodb=stack.dynamodb,
        s3=stack.s3,
        table=stack.resources.table_name,
        bucket=stack.resources.bucket,
        reviewer="browser-test",
        labels=LABELS,
    )
    server = ReviewServer(console, port=0, image_origin=image_origin(stack.s3, console.bucket))
    server.serve_in_thread()
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver  # noqa: PLC0415 — selenium is needed only by the browser test
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415 — selenium is needed only by the browser test

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,860",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def shown_key(driver: Any) -> str:
    return driver.execute_script("return document.getElementById('key').textContent")


def photo_loaded(driver: Any) -> bool:
    return driver.execute_script(
        "const p = document.getElementById('photo'); return p.complete && p.naturalWidth > 0"
    )


def press(driver: Any, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415 — selenium is needed only by the browser test

    ActionChains(driver).send_keys(key).perform()


def notice(driver: Any) -> str:
    return driver.execute_script("return document.getElementById('notice').textContent")


def test_review_in_a_browser(stack: Stack, console_url: str, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415 — selenium is needed only by the browser test

    browser.get(console_url)
    oldest = "uploads/shop/00.jpg"
    wait_for(lambda: shown_key(browser) == oldest, "the oldest photo on screen")
    wait_for(lambda: photo_loaded(browser), "the photo to load from its presigned URL")
    assert browser.find_element("id", "remaining").text == f"{PHOTOS} left"
    listed = [row.text for row in browser.find_elements("css selector", "#labels li")]
    assert len(listed) == len(LABELS)
    top3 = browser.find_elements("css selector", "#top3 li")
    assert len(top3) == 3
    assert "%" in top3[0].text

    # One keystroke decides: Enter confirms the model's first choice.
    model_choice = stack.item(oldest).category
    press(browser, Keys.ENTER)
    decided = wait_for(
        lambda: (item := stack.item(oldest)).status is Status.CATALOGUED and item, "the decision"
    )
    assert (decided.category, decided.review_outcome) == (model_choice, ReviewOutcome.CONFIRMED)
    assert (decided.category_source, decided.reviewed_by) == (CategorySource.HUMAN, "browser-test")
    assert shown_key(browser) == "uploads/shop/01.jpg"  # it left the queue
    assert stack.remaining() == PHOTOS - 1

    # Undo restores it, on screen and in the table.
    press(browser, "z")
    wait_for(lambda: shown_key(browser) == oldest, "the undone photo back on screen")
    restored = wait_for(
        lambda: (item := stack.item(oldest)).status is Status.NEEDS_REVIEW and item, "the undo"
    )
    assert (restored.category_source, restored.reviewed_by) == (CategorySource.MODEL, None)
    wait_for(lambda: stack.remaining() == PHOTOS, "the queue count back")

    # A decision on a photo that was uploaded again since it was shown is refused.
    stack.upload(oldest, jpeg("walkers", 1234))
    stack.drain()
    press(browser, "2")
    wait_for(lambda: "changed" in notice(browser), "the page to say the photo changed")
    fresh = stack.item(oldest)
    assert (fresh.status, fresh.category_source) == (Status.NEEDS_REVIEW, CategorySource.MODEL)
    wait_for(lambda: shown_key(browser) == "uploads/shop/01.jpg", "the page to move on")
    wait_for(lambda: photo_loaded(browser), "the next photo")
    folder = output_dir()
    browser.save_screenshot(str(folder / "review-console.png"))
    if os.environ.get("REVIEW_SCREENSHOT_DOCS") == "1":
        browser.save_screenshot(str(REPOSITORY_ROOT / "docs" / "review-console.png"))

    # Pace: settle the rest one keystroke each, as fast as the page lets a person see each photo.
    shortcut = browser.find_element("css selector", "#labels li kbd").text
    keys = [Keys.ENTER, "2", shortcut, "n", "u", "3"]
    to_decide = PHOTOS - 1  # the new upload of the oldest key comes back at the end of the queue
    started = time.monotonic()
    for index in range(to_decide):
        before = shown_key(browser)
        if before == HOSTILE_KEY:
            # The key with HTML in it is text on the page; its markup never ran.
            assert browser.find_element("id", "key").text == HOSTILE_KEY
            assert browser.execute_script("return window.__pwned === undefined")
            assert browser.execute_script("return document.querySelectorAll('img').length") == 1
        press(browser, keys[index % len(keys)])
        wait_for(lambda before=before: shown_key(browser) != before, "the next photo")
        wait_for(lambda: photo_loaded(browser) or not shown_key(browser), "it to load")
    wait_for(lambda: stack.remaining() == 1, "every decision written", timeout=20)
    elapsed = time.monotonic() - started
    per_minute = to_decide * 60.0 / elapsed
    print(f"\nreview console: {to_decide} decisions in {elapsed:.2f} s = {per_minute:.0f} / minute")
    (folder / "pace.txt").write_text(f"{per_minute:.1f} decisions per minute\n")
    assert stack.item(HOSTILE_KEY).category_source is CategorySource.HUMAN
    # Left: only the new upload of the oldest key, as its own object version.
    assert shown_key(browser) == oldest
    assert per_minute > 30  # two seconds a photo is the goal for a person; the page is no limit
