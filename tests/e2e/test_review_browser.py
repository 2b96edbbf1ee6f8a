"""The review console in a real browser: headless Chromium driven by selenium, against the local
stack (a moto server on 127.0.0.1 with the template's resources, the real handler with a tiny
model whose review threshold sends every photo to NEEDS_REVIEW).

The page lists the batch, one keystroke decides and the DynamoDB item changes, the photo leaves
the queue, Undo restores it, a decision on a photo uploaded again meanwhile is refused, and a key
with HTML in it stays text. It measures decisions per minute through the page and prints it.
Two reviewers at once work on disjoint photos at twice one reviewer's pace; a HEIC upload is a
picture; the letters stay when a label outside the model's set appears; an unfamiliar photo is
not confirmed by one Enter; a held key decides one photo.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import boto3
import numpy as np
import pytest
from botocore.config import Config

from contracts.catalogue import (
    CatalogueItem,
    CategorySource,
    LabelScore,
    ReviewOutcome,
    Status,
    event_order,
    utc_now,
)
from contracts.catalogue_table import read_item, scan_items, write_item
from handler import app
from local_stack.resources import LocalResources, create_local_resources
from local_stack.stack import REGION, LocalContext, drain_queue, moto_server
from review import audit
from review.console import Console
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
        # moto's server applies an UpdateItem's actions one by one on the stored item, so a read
        # racing the console's write can see half of it (a "human" item without its reviewer);
        # DynamoDB itself is atomic per item. Read again when that happens.
        for _ in range(20):
            try:
                return read_item(
                    self.dynamodb, self.resources.table_name, self.resources.bucket, key
                )
            except ValueError:
                time.sleep(0.05)
        raise AssertionError(f"{key} stayed unreadable")

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
    server = ReviewServer(console, port=0)
    server.serve_in_thread()
    yield server.url
    server.shutdown()
    server.server_close()


def start_browser() -> Any:
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
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def shown_key(driver: Any) -> str:
    return driver.execute_script("return document.getElementById('key').textContent")


def photo_loaded(driver: Any) -> bool:
    """The photo on screen is a decoded picture and the page has marked it seen."""
    return driver.execute_script(
        "const p = document.getElementById('photo');"
        "return p.complete && p.naturalWidth > 0 && document.body.dataset.seen !== ''"
    )


def press(driver: Any, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415 — selenium is needed only by the browser test

    ActionChains(driver).send_keys(key).perform()


def notice(driver: Any) -> str:
    return driver.execute_script("return document.getElementById('notice').textContent")


def test_review_in_a_browser(
    stack: Stack, console_url: str, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415 — selenium is needed only by the browser test

    browser.get(console_url)
    oldest = "uploads/shop/00.jpg"
    wait_for(lambda: shown_key(browser) == oldest, "the oldest photo on screen")
    wait_for(lambda: photo_loaded(browser), "the photo to load from the console's preview")
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
    wait_for(lambda: photo_loaded(browser), "the next photo")
    press(browser, "z")
    wait_for(lambda: shown_key(browser) == oldest, "the undone photo back on screen")
    wait_for(lambda: photo_loaded(browser), "the undone photo")
    restored = wait_for(
        lambda: (item := stack.item(oldest)).status is Status.NEEDS_REVIEW and item, "the undo"
    )
    assert (restored.category_source, restored.reviewed_by) == (CategorySource.MODEL, None)
    wait_for(lambda: stack.remaining() == PHOTOS, "the queue count back")

    # A decision on a photo that was uploaded again since it was shown is refused (the worker's
    # write of the new version also ends this console's lease on it).
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

    # Pace: settle the rest one keystroke each, as fast as the page lets a person see each photo.
    shortcut = browser.find_element("css selector", "#labels li kbd").text
    keys = [Keys.ENTER, "2", shortcut, "n", "u", "3"]
    to_decide = PHOTOS - 1  # the new upload of the oldest key comes back at the end of the queue
    started = time.monotonic()
    for index in range(to_decide):
        wait_for(lambda: shown_key(browser) and photo_loaded(browser), "a photo on screen")
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
    wait_for(lambda: shown_key(browser) == oldest, "the new upload of the oldest key", 40)
    wait_for(lambda: photo_loaded(browser), "it to load")
    if os.environ.get("REVIEW_SCREENSHOT_DOCS") == "1":
        # The team's counters are read every 30 s: the page picks them up with its next read.
        monkeypatch.setattr("review.console.RECOUNT_SECONDS", 0.0)
        browser.execute_script("refill(true)")
        wait_for(lambda: browser.find_elements("css selector", "#team td"), "the team's counters")
        browser.save_screenshot(str(REPOSITORY_ROOT / "docs" / "review-console.png"))
    assert per_minute > 30  # two seconds a photo is the goal for a person; the page is no limit


def write_waiting(stack: Stack, key: str, data: bytes, index: int, **changes: Any) -> None:
    """An uploaded photo and its NEEDS_REVIEW item, written directly (no worker: quick)."""
    etag = stack.s3.put_object(Bucket=stack.resources.bucket, Key=key, Body=data)["ETag"]
    item = CatalogueItem(
        bucket=stack.resources.bucket,
        key=key,
        status=Status.NEEDS_REVIEW,
        category=LABELS[1],
        confidence=0.4,
        top3=(LabelScore(LABELS[1], 0.4), LabelScore(LABELS[2], 0.3), LabelScore(LABELS[3], 0.1)),
        model_version="v-test",
        event_order=event_order(f"{index + 1:04X}", None),
        processed_at=utc_now(),
        uploaded_at=f"2026-12-01T00:00:{index:02d}.000000Z",
        etag=etag.strip('"'),
    )
    assert write_item(stack.dynamodb, stack.resources.table_name, replace(item, **changes))


@pytest.fixture
def empty_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The local stack's resources, without the worker's photos."""
    with moto_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
        sqs, dynamodb = boto3.client("sqs"), boto3.client("dynamodb")
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        yield Stack(s3, sqs, dynamodb, resources)


def serve(stack: Stack, reviewer: str) -> ReviewServer:
    console = Console(
        dynamodb=stack.dynamodb,
        s3=stack.s3,
        table=stack.resources.table_name,
        bucket=stack.resources.bucket,
        reviewer=reviewer,
        labels=LABELS,
    )
    server = ReviewServer(console, port=0)
    server.serve_in_thread()
    return server


def review_for(url: str, seconds: float, think: float, driver: Any) -> list[str]:
    """A reviewer at a person's pace: looks at each photo ``think`` seconds, then presses Enter;
    for ``seconds``. The keys decided (as the page showed them)."""
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415 — selenium is needed only by the browser test

    decided: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            wait_for(lambda: photo_loaded(driver), "a photo", timeout=5)
        except AssertionError:
            break  # nothing left for this reviewer
        key = shown_key(driver)
        time.sleep(think)
        press(driver, Keys.ENTER)
        decided.append(key)
        wait_for(lambda key=key: shown_key(driver) != key, "the next photo")
    return decided


@pytest.mark.heavy
def test_two_reviewers_at_once_work_on_disjoint_photos_at_twice_the_pace(
    empty_stack: Stack,
) -> None:
    """GIVEN one queue and a reviewer who takes 0.4 s a photo WHEN a second reviewer joins with
    a console and a browser of their own THEN both make progress on disjoint photos, none of
    their decisions is refused, and together they decide about twice as many in the same time."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    for index in range(40):
        write_waiting(
            empty_stack, f"uploads/team/{index:02d}.jpg", jpeg(LABELS[index % 5], index), index
        )
    servers = [serve(empty_stack, "ana"), serve(empty_stack, "bo")]
    drivers = [start_browser(), start_browser()]
    window, think = 6.0, 0.4
    try:
        for driver, server in zip(drivers, servers, strict=True):
            driver.get(server.url)
        # Alone: Ana for the window.
        alone = review_for(servers[0].url, window, think, drivers[0])
        # Together: Ana and Bo, each in their own browser, for the same window.
        with ThreadPoolExecutor(2) as pool:
            together = list(
                pool.map(
                    lambda pair: review_for(pair[1].url, window, think, pair[0]),
                    zip(drivers, servers, strict=True),
                )
            )
    finally:
        for driver in drivers:
            driver.quit()
        for server in servers:
            server.shutdown()
            server.server_close()
    table = empty_stack.resources.table_name
    items = {
        item.key: item
        for item in scan_items(empty_stack.dynamodb, table)
        if item.category_source is CategorySource.HUMAN
    }
    ana, bo = together
    assert ana
    assert bo
    assert not set(ana) & set(bo)  # on disjoint photos
    assert not set(alone) & set(ana + bo)
    # Every decision the pages made was accepted: none refused.
    accepted_together = [key for key in ana + bo if key in items]
    assert len(accepted_together) == len(ana) + len(bo)
    assert {items[key].reviewed_by for key in bo} == {"bo"}
    refused = [e for e in audit.trail(empty_stack.dynamodb, table) if e["event"] == "refused"]
    assert refused == []
    one, two = len(alone) * 60 / window, len(accepted_together) * 60 / window
    print(f"\nreview console, {think} s a photo: one reviewer {one:.0f} / minute, two {two:.0f}")
    (output_dir() / "team-pace.txt").write_text(
        f"one reviewer {one:.1f} / minute; two reviewers {two:.1f} / minute\n"
    )
    assert len(accepted_together) >= 1.6 * len(alone)


def test_page_shows_every_photo_and_guards_each_decision(empty_stack: Stack, browser: Any) -> None:
    """One browser session, four photos:

    1. a HEIC upload (what iPhones send) is shown as a picture;
    2. a photo whose top 3 names "playpen", a label outside the model's set: the letters do not
       change, and its digit decides nothing;
    3. an unfamiliar photo: one Enter does not confirm it, a second does (deliberately);
    4. a held Enter (key repeat) decides one photo, never the next one nobody saw.
    """
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415 — selenium is needed only by the browser test

    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    heic = io.BytesIO()
    draw_sample_image(LABELS[0], np.random.default_rng(1), size=1200).save(heic, format="HEIF")
    write_waiting(empty_stack, "uploads/iphone.heic", heic.getvalue(), 0)
    unknown = (LabelScore("playpen", 0.5), LabelScore(LABELS[2], 0.3))
    write_waiting(empty_stack, "uploads/playpen.jpg", jpeg(LABELS[2], 2), 1, top3=unknown)
    write_waiting(
        empty_stack, "uploads/melons.jpg", jpeg(LABELS[3], 3), 2, reason="unfamiliar",
        confidence=0.97,
    )  # fmt: skip
    write_waiting(empty_stack, "uploads/held-1.jpg", jpeg(LABELS[4], 4), 3)
    write_waiting(empty_stack, "uploads/held-2.jpg", jpeg(LABELS[5], 5), 4)
    server = serve(empty_stack, "ana")
    try:
        browser.get(server.url)
        # 1. HEIC: the console's JPEG preview is on screen, decoded by the browser.
        wait_for(lambda: shown_key(browser) == "uploads/iphone.heic", "the HEIC photo")
        wait_for(lambda: photo_loaded(browser), "the HEIC photo as a picture")
        width = browser.execute_script("return document.getElementById('photo').naturalWidth")
        assert width == 1200
        letters = browser.execute_script(
            "return Array.from(document.querySelectorAll('#labels li')).map(li => li.textContent)"
        )
        press(browser, Keys.ENTER)
        wait_for(lambda: shown_key(browser) == "uploads/playpen.jpg", "the playpen photo")
        wait_for(lambda: photo_loaded(browser), "it to load")
        # 2. The letters are the model's and stay; "1" (playpen) decides nothing.
        assert (
            browser.execute_script(
                "return Array.from(document.querySelectorAll('#labels li'))"
                ".map(li => li.textContent)"
            )
            == letters
        )
        assert "playpen (not a model label)" in browser.find_element("id", "top3").text
        press(browser, "1")
        time.sleep(0.5)
        assert shown_key(browser) == "uploads/playpen.jpg"
        assert empty_stack.item("uploads/playpen.jpg").status is (Status.NEEDS_REVIEW)
        press(browser, "2")  # a model label: decides
        wait_for(lambda: shown_key(browser) == "uploads/melons.jpg", "the unfamiliar photo")
        wait_for(lambda: photo_loaded(browser), "it to load")
        # 3. Unfamiliar: the reason is on screen; one Enter asks for a second.
        assert "unfamiliar" in browser.find_element("id", "reason").text
        press(browser, Keys.ENTER)
        time.sleep(0.5)
        assert shown_key(browser) == "uploads/melons.jpg"
        assert "Enter again" in browser.find_element("id", "reason").text
        assert empty_stack.item("uploads/melons.jpg").status is (Status.NEEDS_REVIEW)
        press(browser, Keys.ENTER)
        wait_for(lambda: shown_key(browser) == "uploads/held-1.jpg", "the next photo")
        confirmed = wait_for(
            lambda: (i := empty_stack.item("uploads/melons.jpg")).status is Status.CATALOGUED and i,
            "the deliberate confirmation",
        )
        assert confirmed.review_outcome is ReviewOutcome.CONFIRMED
        # 4. A held Enter: the first press and then the browser's repeats (repeat: true).
        wait_for(lambda: photo_loaded(browser), "it to load")
        press(browser, Keys.ENTER)
        browser.execute_script(
            "for (let i = 0; i < 30; i++) document.dispatchEvent(new KeyboardEvent('keydown',"
            " {key: 'Enter', code: 'Enter', repeat: true, bubbles: true}));"
        )
        wait_for(lambda: shown_key(browser) == "uploads/held-2.jpg", "the next photo")
        time.sleep(1.0)
        assert shown_key(browser) == "uploads/held-2.jpg"
        held = empty_stack.item("uploads/held-2.jpg")
        assert (held.status, held.category_source) == (Status.NEEDS_REVIEW, CategorySource.MODEL)
        # Caps Lock / Shift: "N" is "n".
        wait_for(lambda: photo_loaded(browser), "it to load")
        press(browser, "N")
        wait_for(
            lambda: empty_stack.item("uploads/held-2.jpg").status is Status.REJECTED,
            "Shift+n to decide 'not a baby product'",
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_tab_from_before_a_console_restart_stops(empty_stack: Stack, browser: Any) -> None:
    """GIVEN a page open on a console WHEN the console restarts (new CSRF token, new leases)
    THEN the page's next decision is refused and the page stops advancing, saying reload."""
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415 — selenium is needed only by the browser test

    for index in range(3):
        write_waiting(empty_stack, f"uploads/r{index}.jpg", jpeg(LABELS[index], index), index)
    server = serve(empty_stack, "ana")
    port = server.server_address[1]
    browser.get(server.url)
    wait_for(lambda: photo_loaded(browser), "a photo")
    server.console.release_all()
    server.shutdown()
    server.server_close()
    restarted = Console(
        dynamodb=empty_stack.dynamodb,
        s3=empty_stack.s3,
        table=empty_stack.resources.table_name,
        bucket=empty_stack.resources.bucket,
        reviewer="ana",
        labels=LABELS,
    )
    again = ReviewServer(restarted, port=port)
    again.serve_in_thread()
    try:
        press(browser, Keys.ENTER)
        wait_for(lambda: "Reload" in notice(browser), "the page to say reload")
        shown = shown_key(browser)
        press(browser, Keys.ENTER)
        time.sleep(0.5)
        assert shown_key(browser) == shown  # it no longer advances
        assert browser.execute_script("return document.body.dataset.halted") == "1"
        assert queue_length(empty_stack.dynamodb, empty_stack.resources.table_name) == 3
    finally:
        again.shutdown()
        again.server_close()
