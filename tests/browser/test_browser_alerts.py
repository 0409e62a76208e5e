"""Watch rules and alerts as a user meets them in a real Chromium, on the real app with the offline narrator:
a rule typed into the rules box before Start, refused when the narrator cannot judge it; the alert in the
chat with its snapshot, its sound and its notification, the rule's row and the status strip saying so;
Pause (which clears the alert), Resume and Remove while the session runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.browser import AppServer, browser_test_marks
from tests.helpers.media import Segment, write_video

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from tests.helpers.app_page import (  # noqa: E402  (after the skip: the helpers need Playwright)
    add_rule,
    doc_screenshot,
    expect_alert,
    rule_row,
    status_strip,
    upload,
    wait_health,
)

pytestmark = browser_test_marks()

TALL = {"width": 1280, "height": 1240}  # the picture, the chat and the rules box in one screenshot


@pytest.fixture(scope="module")
def left_video(media_dir: Path) -> Path:
    """Still for 3 s, a square pacing in the left third from 3 s to 9 s, then still to 20 s: the offline narrator
    sees "motion on the left" soon after 3 s, and the session runs on long enough to pause the rule."""
    segments = [Segment(3, 1), Segment(6, 1, True, (0.0, 0.33)), Segment(11, 1)]
    return write_video(media_dir / "alert-left.mp4", segments, width=640, height=360)


def test_a_rule_alerts_in_the_chat_with_its_snapshot_and_pause_and_remove_work(
    app: AppServer, open_tab, left_video: Path, tmp_path: Path
) -> None:
    page = open_tab(viewport=TALL)
    box = page.locator("#rule-input textarea, #rule-input input").first
    add_rule(page, "the pot is boiling over")
    note = page.locator("#rules-box .rules-note")
    expect(note).to_contain_text("cannot judge 'the pot is boiling over'", timeout=10_000)
    expect(note).to_contain_text("it understands motion")  # what it can watch for instead
    expect(page.locator("#rules-box .rule")).to_have_count(0)
    expect(box).to_have_value("the pot is boiling over")  # kept, to reword
    add_rule(page, "left=motion on the left")
    left = rule_row(page, "left")
    expect(left).to_have_attribute("data-state", "active", timeout=10_000)
    expect(note).to_have_count(0)
    expect(box).to_have_value("")
    page.context.grant_permissions(["notifications"])
    page.locator("#notify-me").check()
    page.wait_for_function("() => window.onlooker.notify === true", timeout=5_000)

    upload(page, left_video)
    page.locator("#start").click()
    bubble = expect_alert(page)
    expect(bubble.locator(".alert-head")).to_contain_text("⚠ ALERT")
    expect(bubble.locator(".alert-rule")).to_have_text("motion on the left")
    clock = bubble.locator(".clock").inner_text()
    assert "00:03.0" <= clock <= "00:05.0", clock  # the motion starts at 3 s
    expect(bubble.locator(".alert-why")).to_contain_text("on the left")
    expect(bubble.locator(".alert-why")).to_contain_text("% sure")
    expect(left).to_have_attribute("data-state", "alert", timeout=5_000)
    expect(status_strip(page).locator('.pill[data-key="alerts"]')).to_contain_text("1 · 1 ON", timeout=5_000)
    heard = page.evaluate("() => [window.onlooker.beeps, window.onlooker.notified]")
    assert heard == [1, 1], f"beeps and notifications: {heard}"
    doc_screenshot(page, "screenshot-alerts", tmp_path)

    left.get_by_role("button", name="Pause").click()  # while the alert is on: it clears
    expect(left).to_have_attribute("data-state", "paused", timeout=10_000)
    expect(page.locator("#chat-pane .alert-clear")).to_contain_text("clear: motion on the left", timeout=10_000)
    expect(bubble).to_have_attribute("data-state", "cleared")
    left.get_by_role("button", name="Resume").click()
    expect(left).to_have_attribute("data-state", "active", timeout=10_000)
    left.get_by_role("button", name="Remove").click()
    expect(left).to_have_count(0, timeout=10_000)
    expect(page.locator("#rules-box .rules-empty")).to_be_visible()
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)
