"""Offline narrator backend: says what OpenCV measured (motion, cuts, light, colour, faces, people).

It is what the app falls back to with no GPU and no model, so it has to be a useful camera
monitor on one CPU core and strictly honest: every sentence reports a measurement
(``pipeline.measure``, worded by ``opencv_wording``), a face or person is claimed only above a
confidence tuned on labelled photos, and a detector this OpenCV build lacks (OpenCV 5 ships no Haar
cascades or HOG people detector) is named in ``description`` and never stands behind a claim. It
talks the way the chosen profile does and follows the words of a live instruction it can measure
(a region, people, faces, motion, light, colour; ``opencv_focus``), saying which through
``OpenCVNarrator.understands``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.backends.opencv_focus import focus_phrase, instructions_in, read_focus
from pipeline.backends.opencv_rules import condition_problem, judge, meaning, read_condition
from pipeline.backends.opencv_wording import compose, limit_words
from pipeline.config import PROFILES_DIR
from pipeline.errors import ConfigError
from pipeline.measure.detections import detector_notes
from pipeline.measure.observations import observe
from pipeline.prompts import load_profiles
from pipeline.watch.verdict import verdict_json

if TYPE_CHECKING:
    from pipeline.config import Settings


class OpenCVNarrator(Backend):
    """Describes the window from measurements alone: no weights, no GPU, starts instantly.

    It words comments the way the chosen profile talks (``opencv_wording``, keyed by profile file name)
    and follows the parts of live instructions it can measure; ``understands`` tells the UI which.
    """

    name = "opencv"
    capabilities = Capabilities(images=True, video=False, audio_out=False, max_frames=16)

    def __init__(self, profiles_dir: Path = PROFILES_DIR) -> None:
        self._profiles_dir = profiles_dir

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenCVNarrator:
        """Nothing to load: profiles and detectors are read lazily on the first comment."""
        return cls(settings.profiles_dir)

    @property
    def description(self) -> str:
        """Engine summary plus any detector this OpenCV build lacks, so the UI never overstates it."""
        notes = detector_notes()
        return "OpenCV narrator (offline, no model)" + (f"; {'; '.join(notes)}" if notes else "")

    def understands(self, instruction: str) -> str | None:
        """What this narrator will do for a live instruction, as a verb phrase for the UI to show
        ("focus on people on the left"), or None when it understands none of it and ignores it."""
        return focus_phrase(read_focus([instruction]))

    def rule_problem(self, rule_text: str) -> str | None:
        """A rule outside the narrator's vocabulary (``opencv_rules.VOCABULARY``) is refused, never ignored."""
        return condition_problem(rule_text)

    def rule_meaning(self, rule_text: str) -> str | None:
        condition = read_condition(rule_text)
        return meaning(condition) if condition is not None else None

    @cached_property
    def _styles(self) -> dict[str, str]:
        """System prompt → profile file name: requests carry the profile's prompt, not its name."""
        try:
            profiles = load_profiles(self._profiles_dir)
        except ConfigError:
            return {}  # neutral wording; load_run_config already stops a start on a broken profiles folder
        return {profile.system_prompt.strip(): key for key, profile in profiles.items()}

    def style(self, system_prompt: str) -> str:
        """The profile whose prompt ``build_prompt`` put first in ``system_prompt``; "narrator" for any other."""
        matches = [prompt for prompt in self._styles if system_prompt.startswith(prompt)]
        return self._styles[max(matches, key=len)] if matches else "narrator"

    def stream(self, request: CommentRequest) -> Iterator[str]:
        """Measure, word the findings and yield them word by word, stopping as soon as cancelled."""
        request.timings["model_start"] = time.perf_counter()
        frames = request.frames
        if request.question:
            yield self._check(request)
            return
        seed = frames[-1].index if frames else 0
        focus = read_focus(instructions_in(request.prompt.user))
        obs = observe([f.image for f in frames], [f.media_time for f in frames], focus.bounds)
        sentences = compose(obs, seed, request.trigger, self.style(request.prompt.system), focus)
        text = limit_words(sentences, request.max_tokens)
        for i, word in enumerate(text.split()):
            if request.cancel.is_set():
                return
            if i == 0:
                request.timings["model_first_token"] = time.perf_counter()
            yield word + " "

    def _check(self, request: CommentRequest) -> str:
        """A watch rule judged on measurements, answered as the verdict JSON a model would give."""
        condition = read_condition(request.question)
        if condition is None:  # refused at Start; a rule added since is no verdict, not a guess
            return ""
        frames = request.frames
        holds, confidence, reason = judge(
            condition, [f.image for f in frames], [f.media_time for f in frames], request.trigger == "scene_cut"
        )
        request.timings["model_first_token"] = time.perf_counter()
        return verdict_json(holds, confidence, reason)
