"""One camera's rule checks: when to ask, the short structured question per rule, and what follows.

A check is due when the picture changed (motion above the preset's threshold, or a scene cut) and at
least ``CHECK_GAP`` s passed since the last one, or every ``interval`` s while it is still. It takes a
turn from the backend's scheduler at the ``alert`` priority, ahead of commentary, and asks each active
rule on the newest frames (``watch.verdict``); each answer goes on the bus (``watch_check``), into the
rule's ``RuleTrack``, and, when that confirms or clears an alert, out as an ``alert`` event with the
snapshot JPEG and a clip (``watch.clips``) around it. Nothing here ever raises into the session: an
answer that cannot be read is no verdict, a backend error is no verdict with its reason, and a crash
is one error event ("alerts stopped") while commentary goes on.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from pipeline.backends.base import Backend, CommentRequest
from pipeline.config import Tuning
from pipeline.errors import BackendError
from pipeline.events import Alert, AlertClip, AlertState, Bus, RuleCheck
from pipeline.frames import Frame
from pipeline.hub import FrameHub
from pipeline.hub_worker import HubWorker
from pipeline.jpeg import encode_jpeg
from pipeline.scheduler import Scheduler
from pipeline.watch.clips import ClipRing, encode_clip
from pipeline.watch.desk import WatchDesk
from pipeline.watch.rules import WatchRule
from pipeline.watch.tracker import RuleTrack
from pipeline.watch.verdict import CHECK_TOKENS, VERDICT_SCHEMA, Verdict, check_prompt, parse_verdict

log = logging.getLogger(__name__)

CHECK_GAP = 1.0  # media seconds between checks while the picture keeps changing
CHECK_FRAMES = 4  # newest frames a check looks at (fewer when the backend takes fewer)
SNAPSHOT_SIDE = 1280
SNAPSHOT_QUALITY = 85


class Watcher(HubWorker):
    """Owns one camera's check thread; ``stop`` ends it (open clips are finished, live alerts cleared)."""

    thread_name = "watcher"
    crash_words = "alerts stopped"
    crash_fatal = False  # commentary goes on; the user hears that alerts stopped, and why

    def __init__(
        self,
        hub: FrameHub,
        backend: Backend,
        bus: Bus,
        desk: WatchDesk,
        tuning: Callable[[], Tuning],
        scheduler: Scheduler,
        camera_id: Callable[[], str],
    ) -> None:
        super().__init__(hub, bus)
        self.backend, self.desk = backend, desk
        self.scheduler = scheduler
        self._tuning = tuning  # the camera's preset can change live
        self._camera_id = camera_id  # known once the camera started on its source
        self.clips = ClipRing(desk.options.clip if desk.options.keeps_files else 0.0)
        self.stream_id = f"watch-{uuid.uuid4().hex}"  # its own: a check does not disturb commentary's model state
        self.tracks: dict[str, RuleTrack] = {}
        self._alert_ids: dict[str, str] = {}
        self._last: float | None = None  # media time of the newest frame checked
        self._moved = False
        self._seen_cut: float | None = None

    # --- ownership ---
    def offer(self, frame: Frame) -> None:
        """Every decoded frame, on the source's thread: into the clip ring while there are rules."""
        if self.desk.has_rules:
            self.clips.offer(frame)

    # --- the loop (start, stop, running: HubWorker) ---
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.hub.wait(0.2)
            frame = self.hub.latest
            if frame is None:
                if self.hub.ended:
                    return
                continue
            self._keep_clips(frame.media_time, ended=False)
            if self.hub.ended:
                return
            trigger = self._due(frame.media_time)
            rules = self.desk.active()
            self._forget(rules, frame)
            if trigger and rules:
                self._check_all(trigger, rules)

    def _due(self, now: float) -> str | None:
        """Why a check is due now ('start', 'scene_cut', 'motion', 'interval'), or None."""
        if self.hub.score.motion >= self._tuning().motion_threshold:
            self._moved = True
        cut = self.hub.last_cut is not None and self.hub.last_cut != self._seen_cut
        if self.hub.in_gap:
            return None  # a frozen picture is not a still one
        if self._last is None or now < self._last:
            return "start"
        since = now - self._last
        if (cut or self._moved) and since >= CHECK_GAP:
            return "scene_cut" if cut else "motion"
        interval = self.desk.options.interval
        if any(track.active for track in self.tracks.values()):
            interval = min(interval, max(2 * CHECK_GAP, interval / 4))  # an alert on is cleared soon after it ends
        return "interval" if since >= interval else None

    def _frames(self) -> list[Frame]:
        """The frames since the last check (from its newest, so motion has a pair to show in), at most
        ``CHECK_FRAMES``, ending with the newest decoded frame even if the window has not taken it yet."""
        limit = min(CHECK_FRAMES, self.backend.capabilities.max_frames)
        frames = self.hub.window.snapshot(1, limit=limit, since=self._last)
        if len(frames) < 2:
            frames = self.hub.window.snapshot(1, limit=min(limit, 2))
        latest = self.hub.latest
        if latest is not None and (not frames or latest.media_time > frames[-1].media_time):
            frames = [*frames, latest][-limit:]
        return frames

    def _check_all(self, trigger: str, rules: list[WatchRule]) -> None:
        """One scheduler turn (the 'alert' priority) for every active rule, on the same frames."""
        ticket = self.scheduler.ask(self.stream_id, "alert")
        while not ticket.wait(0.1):
            if self._stop.is_set():
                self.scheduler.withdraw(ticket)
                return
        try:
            self._seen_cut, self._moved = self.hub.last_cut, False
            frames = self._frames()
            if not frames:
                return
            self._last = frames[-1].media_time
            for rule in rules:
                if self._stop.is_set():
                    return
                self._check(rule, frames, trigger)
        finally:
            self.scheduler.finish(ticket)

    def _check(self, rule: WatchRule, frames: list[Frame], trigger: str) -> None:
        request = CommentRequest(
            frames=frames,
            prompt=check_prompt(rule.text, len(frames)),
            max_tokens=CHECK_TOKENS,
            temperature=0.0,
            trigger=trigger,
            cancel=self._cancel,
            stream_id=self.stream_id,
            question=rule.text,
            answer_schema=VERDICT_SCHEMA,
        )
        started = time.perf_counter()
        text, problem = "", ""
        try:
            text = "".join(self.backend.stream(request))
        except BackendError as exc:
            problem = f"no verdict: {exc}"
        seconds = time.perf_counter() - started
        if self._stop.is_set():
            return  # cancelled mid-answer: not a verdict either way
        verdict = None if problem else parse_verdict(text)
        if verdict is None and not problem:
            problem = f"no verdict: the answer was not the JSON asked for ({' '.join(text.split())[:80]!r})"
        newest = frames[-1]
        self.bus.publish(
            RuleCheck(
                t=newest.media_time,
                rule=rule.name,
                answer="none" if verdict is None else "yes" if verdict.yes else "no",
                confidence=verdict.confidence if verdict else 0.0,
                reason=verdict.reason if verdict else problem,
                trigger=trigger,
                ms=round(seconds * 1000, 1),
                text=rule.text,
            )
        )
        track = self.tracks.setdefault(rule.name, RuleTrack(rule))
        track.rule = rule
        outcome = track.step(verdict, self._camera_id(), newest.media_time, self.desk.cooldowns)
        if outcome in ("started", "cleared"):
            assert verdict is not None
            self._alert(rule, outcome, verdict, newest)

    def _alert(self, rule: WatchRule, state: AlertState, verdict: Verdict, frame: Frame) -> None:
        camera = self._camera_id()
        if state == "started":
            self._alert_ids[rule.name] = f"{camera}-{rule.name}-{uuid.uuid4().hex[:8]}"
        alert_id = self._alert_ids.get(rule.name, "")
        jpeg, snapshot, clip = b"", "", ""
        if state == "started":
            with contextlib.suppress(ValueError):  # no picture is better than no alert
                jpeg = encode_jpeg(frame.image, SNAPSHOT_QUALITY, SNAPSHOT_SIDE)
            if self.desk.options.keeps_files:
                snapshot = f"alerts/{alert_id}.jpg"
                clip = f"alerts/{alert_id}.mp4" if self.clips.seconds > 0 else ""
        self.bus.publish(
            Alert(
                t=frame.media_time,
                alert_id=alert_id,
                rule=rule.name,
                text=rule.text,
                state=state,
                confidence=verdict.confidence,
                reason=verdict.reason,
                snapshot=snapshot,
                clip=clip,
                jpeg=jpeg,
            )
        )
        if clip:
            self.clips.open(alert_id, rule.name, clip, frame.media_time)

    def _forget(self, rules: list[WatchRule], frame: Frame, why: str = "the rule was removed or paused") -> None:
        """Rules removed or paused (or the session over) while their alert was on: cleared, so no state stays
        ON for good."""
        names = {r.name for r in rules}
        for name in [n for n in self.tracks if n not in names]:
            track = self.tracks.pop(name)
            if track.active:
                self._alert(track.rule, "cleared", Verdict(False, 1.0, why), frame)

    def _keep_clips(self, now: float, ended: bool) -> None:
        for pending in self.clips.ready(now, ended):
            mp4, seconds = encode_clip(pending.frames)
            if mp4:
                self.bus.publish(
                    AlertClip(
                        t=now, alert_id=pending.alert_id, rule=pending.rule, clip=pending.path, seconds=seconds, mp4=mp4
                    )
                )

    def _finish(self) -> None:
        """The source ended or the camera stopped: finish the clips, clear what is still on."""
        frame = self.hub.latest
        if frame is None:
            return
        try:
            self._keep_clips(frame.media_time, ended=True)
            self._forget([], frame, "the session ended")
        except Exception:  # the end of a session must not fail for a clip
            log.exception("watcher: finishing alerts failed")
