"""The offline OpenCV narrator: honest wording of what was measured, profiles, live instructions, streaming contract.

The measurements themselves are tested in test_measure.py."""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.backends import opencv_focus
from pipeline.backends.base import CommentRequest
from pipeline.backends.opencv_focus import place
from pipeline.backends.opencv_narrator import OpenCVNarrator
from pipeline.backends.opencv_wording import limit_words
from pipeline.config import load_settings
from pipeline.frames import Frame
from pipeline.measure import detections
from pipeline.measure.detections import detect_faces
from pipeline.measure.observations import observe
from pipeline.prompts import PromptParts, build_prompt, load_profiles
from tests.helpers import labelled_photos
from tests.helpers.scenes import H, W, backdrop, moving_block_across, moving_block_left, scaled, solid_scene

MOTION_CLAIM = re.compile(r"\b(left|right|centre|top|bottom|across|places|heading)\b|(little|some|lots of) movement")
STILL = re.compile(r"nothing is moving|no movement|nothing moves", re.IGNORECASE)


def frames_of(images: list[np.ndarray], first_index: int = 100) -> list[Frame]:
    return [Frame(im, i * 0.5, 1000.0 + i * 0.5, first_index + i, "test") for i, im in enumerate(images)]


def request(images: list[np.ndarray], *, max_tokens: int = 60, trigger: str = "active", first_index: int = 100):
    return CommentRequest(frames_of(images, first_index), PromptParts("sys", "user"), max_tokens, 0.7, trigger=trigger)


def say(images: list[np.ndarray], **kwargs) -> str:
    return "".join(OpenCVNarrator().stream(request(images, **kwargs)))


# --------------------------------------------------------------------------- wording


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (0.1, 0.5, "on the left"),
        (0.5, 0.5, "in the centre"),
        (0.9, 0.1, "near the top right"),
        (0.5, 0.9, "near the bottom"),
        (None, None, "in several places"),
    ],
)
def test_place_words(x, y, words):
    assert place(x, y) == words


def test_motion_on_the_left_is_reported():
    text = say(moving_block_left())
    assert re.search(r"mov", text, re.IGNORECASE)
    assert "left" in text
    assert "right" not in text


def test_crossing_movement_says_where_it_heads():
    text = say(moving_block_across())
    assert re.search(r"mov", text, re.IGNORECASE)
    assert "right" in text


def test_static_scene_says_nothing_moves_and_claims_no_motion():
    text = say([backdrop()] * 8)
    assert STILL.search(text)
    assert not MOTION_CLAIM.search(text)
    assert "cut" not in text.lower()


@pytest.mark.parametrize(("before", "after", "word"), [(0.3, 1.0, "bright"), (1.0, 0.3, "dark"), (1.0, 0.65, "dark")])
def test_brightness_change_is_reported_without_inventing_motion(before, after, word):
    text = say([scaled(backdrop(), before)] * 4 + [scaled(backdrop(), after)] * 4)
    assert word in text.lower()
    assert not MOTION_CLAIM.search(text)
    assert "cut" not in text.lower()


def test_hard_cut_mid_window_describes_the_new_scene_without_announcing_the_cut():
    red, blue = solid_scene((200, 30, 30)), solid_scene((30, 30, 200))
    text = say([red] * 4 + [blue] * 4)
    first = text.split(".")[0].lower()
    assert "blue" in first  # the new shot is described first, not the old one
    assert "red" not in text
    assert "cut" not in text.lower()  # the UI notes the cut; saying it again reports it twice
    assert not MOTION_CLAIM.search(text)


def test_covered_camera_says_still_and_very_dark():
    text = say([np.full((H, W, 3), 8, np.uint8)] * 5)
    assert STILL.search(text)
    assert "dark" in text.lower()


@pytest.mark.parametrize("first_index", range(6))
def test_scene_cut_trigger_describes_the_scene_even_when_the_window_shows_no_cut(first_index):
    text = say([backdrop()] * 3, trigger="scene_cut", first_index=first_index)
    assert "cut" not in text.lower()
    assert re.search(r"new (scene|view)", text.split(".")[0])
    assert "moderately lit" in text.split(".")[0]
    assert STILL.search(text)


def test_colour_change_is_reported():
    greenish = [solid_scene((30, 190, 40))] * 3
    blueish = [solid_scene((30, 60, 200))] * 3
    # a gradual fade has no single jump, so it is a colour change rather than a cut
    fade = [cv2.addWeighted(greenish[0], 1 - a, blueish[0], a, 0) for a in np.linspace(0, 1, 8)]
    text = say(fade)
    assert "blue" in text


def test_empty_window_says_no_picture():
    req = request([])
    assert "".join(OpenCVNarrator().stream(req)).strip() == "No picture yet."
    assert "model_start" in req.timings


def test_single_frame_makes_no_motion_claim():
    text = say([backdrop()])
    assert not MOTION_CLAIM.search(text)
    assert not STILL.search(text)  # one frame cannot show stillness either


# --------------------------------------------------------------------------- streaming contract


def test_stream_yields_word_deltas_and_sets_timings():
    req = request(moving_block_left())
    deltas = list(OpenCVNarrator().stream(req))
    assert len(deltas) > 1
    assert all(d.endswith(" ") and d.strip() and " " not in d.strip() for d in deltas)
    assert req.timings["model_start"] <= req.timings["model_first_token"] <= time.perf_counter()


def test_cancel_after_first_delta_stops_the_stream():
    req = request(moving_block_left())
    stream = OpenCVNarrator().stream(req)
    first = next(stream)
    assert first.strip()
    req.cancel.set()
    assert list(stream) == []


def test_cancel_before_start_yields_nothing():
    req = request(moving_block_left())
    req.cancel.set()
    assert list(OpenCVNarrator().stream(req)) == []


@pytest.mark.parametrize("max_tokens", [4, 6, 9, 12])
def test_max_tokens_cuts_at_a_sentence_boundary(max_tokens):
    red, blue = solid_scene((200, 30, 30)), solid_scene((30, 30, 200))
    images = [red] * 3 + [blue] * 2 + [scaled(blue, 0.4)] * 3  # cut, then the light drops: several sentences
    full = say(images)
    first_sentence = full.split(".")[0] + "."
    text = say(images, max_tokens=max_tokens)
    words = text.split()
    assert len(words) <= max(max_tokens, len(first_sentence.split()))
    assert full.startswith(text)
    assert text.startswith(first_sentence)
    assert text.rstrip().endswith((".", "!", "?"))
    assert len(words) < len(full.split())  # the cap did bite


def test_output_is_deterministic_for_the_same_input():
    images = moving_block_left()
    assert say(images) == say(images)
    assert say([backdrop()] * 4, first_index=7) == say([backdrop()] * 4, first_index=7)


def test_wording_varies_with_the_frame_index_but_stays_honest():
    texts = {say([backdrop()] * 4, first_index=i) for i in range(12)}
    assert len(texts) > 1
    assert all(STILL.search(t) for t in texts)


@given(
    st.lists(st.lists(st.sampled_from(["a", "bb", "ccc"]), min_size=1, max_size=6), max_size=6),
    st.integers(1, 30),
)
def test_limit_words_keeps_whole_sentences_within_the_cap(sentence_words, cap):
    sentences = [" ".join(words) + "." for words in sentence_words]
    text = limit_words(sentences, cap)
    assert " ".join(sentences).startswith(text)
    if sentences:
        assert text.startswith(sentences[0])  # never half a sentence
        assert len(text.split()) <= max(cap, len(sentences[0].split()))
        assert text.endswith(".")


def test_backend_surface():
    backend = OpenCVNarrator.from_settings(load_settings(backend="opencv"))
    assert backend.name == "opencv"
    assert backend.capabilities.max_frames == 16
    assert backend.capabilities.images and not backend.capabilities.video
    assert backend.description.startswith("OpenCV narrator (offline, no model)")
    backend.close()
    backend.close()


def test_one_call_on_eight_720p_frames_is_fast():
    big = [cv2.resize(im, (1280, 720)) for im in moving_block_left()]
    req = request(big)
    narrator_ = OpenCVNarrator()
    list(narrator_.stream(request(big)))  # warm the detectors
    start = time.perf_counter()
    list(narrator_.stream(req))
    assert time.perf_counter() - start < 1.0  # ~50-80 ms on one core; loose so a busy CI box passes


# --------------------------------------------------------------------------- faces and people


def test_missing_detectors_degrade_honestly(monkeypatch):
    monkeypatch.setattr(detections, "_face_detector", lambda: (None, "no face detection: test build"))
    monkeypatch.setattr(detections, "_people_detector", lambda: (None, "no people detection: test build"))
    backend = OpenCVNarrator()
    assert "no face detection" in backend.description
    assert "no people detection" in backend.description
    obs = observe([backdrop()] * 2, [0.0, 0.5])
    assert obs.faces is None and obs.people is None
    assert detect_faces(backdrop()) == []
    assert "face" not in say([backdrop()] * 2)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A real photo with one frontal face, shipped inside the scikit-image wheel (no download)."""
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@pytest.mark.parametrize(("x0", "side"), [(0, "left"), (768, "right")])
def test_a_real_face_is_found_and_placed(astronaut, x0, side):
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    canvas[104:616, x0 : x0 + 512] = astronaut
    faces = detect_faces(canvas)
    assert len(faces) == 1
    cx, _ = faces[0].centre
    assert (cx < 1 / 3) if side == "left" else (cx > 2 / 3)
    text = say([canvas] * 3)
    assert re.search(rf"One face, [^.]*\b{side}\b", text)
    assert STILL.search(text)


def test_a_face_below_the_confidence_threshold_is_never_claimed():
    data = pytest.importorskip("skimage.data")
    coins = cv2.cvtColor(data.coins(), cv2.COLOR_GRAY2RGB)
    cascade, _ = detections._face_detector()
    assert cascade is not None
    grey = cv2.cvtColor(coins, cv2.COLOR_RGB2GRAY)
    assert len(cascade.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=3, minSize=(20, 20)))  # a coin fools it
    assert detect_faces(coins) == []
    assert not re.search(r"\b(faces?|person|people)\b", say([coins] * 3))


# --------------------------------------------------------------------------- labelled photos


@pytest.fixture(scope="module")
def labelled() -> list[labelled_photos.Sample]:
    return labelled_photos.samples()


def test_wording_claims_no_face_or_person_in_photos_without_one(labelled):
    empty = [s for s in labelled if s.faces == () and s.people == () and s.name.endswith(("frame, centre", "mirrored"))]
    assert len(empty) >= 30
    for sample in empty:
        text = say([sample.image] * 2)
        assert not re.search(r"\b(faces?|person|people)\b", text), (sample.name, text)


# --------------------------------------------------------------------------- profiles


PROFILES = load_profiles()


def say_as(images: list[np.ndarray], profile: str, instructions: tuple[str, ...] = (), trigger: str = "active") -> str:
    """A comment through the real prompt path: the profile and instructions as build_prompt hands them over."""
    prompt = build_prompt(
        PROFILES[profile],
        frame_count=len(images),
        span_seconds=0.5 * len(images),
        recent=[],
        instructions=list(instructions),
        trigger=trigger,
    )
    req = CommentRequest(frames_of(images), prompt, 60, 0.7, trigger=trigger)
    return "".join(OpenCVNarrator().stream(req)).strip()


@pytest.mark.parametrize("key", sorted(PROFILES))
def test_each_profile_is_recognised_from_its_prompt(key):
    system = build_prompt(PROFILES[key], frame_count=1, span_seconds=0, recent=[], instructions=[], trigger="start")
    assert OpenCVNarrator().style(system.system) == key
    assert OpenCVNarrator().style("You are someone else entirely.") == "narrator"


def test_profiles_word_the_same_measurements_differently():
    texts = {key: say_as(moving_block_left(), key) for key in PROFILES}
    assert len(set(texts.values())) == len(texts)
    assert all("left" in t and "right" not in t for t in texts.values())  # the facts stay the same
    assert texts["narrator"] == say(moving_block_left()).strip()  # the neutral wording
    assert texts["security"].startswith(("Motion", "Minor motion", "Heavy motion"))
    assert texts["sports"].endswith("!")


def test_security_profile_is_terse_about_a_still_scene():
    assert say_as([backdrop()] * 4, "security") == "No change. No motion."


def test_a_profile_without_its_own_phrase_uses_the_neutral_one():
    assert "nature" in PROFILES
    text = say_as([np.full((H, W, 3), 8, np.uint8)] * 3, "nature")
    assert "The picture is very dark." in text


def test_unknown_profiles_folder_falls_back_to_neutral_wording(tmp_path):
    backend = OpenCVNarrator(tmp_path)  # no profile files: neutral wording, no crash
    assert backend.style(PROFILES["sports"].system_prompt) == "narrator"


# --------------------------------------------------------------------------- live instructions


@pytest.mark.parametrize(
    ("instruction", "phrase"),
    [
        ("Focus on people on the left", "focus on people on the left"),
        ("watch the top right corner", "focus on what happens near the top right"),
        ("What about the light and the colours?", "focus on light and colour"),
        ("Is anyone moving in the center?", "focus on people and movement in the centre"),
        ("count the faces", "focus on faces"),
        ("tell me about the bottom", "focus on what happens near the bottom"),
        ("who is winning?", None),
        ("", None),
    ],
)
def test_understands_says_what_it_will_do(instruction, phrase):
    assert OpenCVNarrator().understands(instruction) == phrase


def test_understands_promises_no_detector_this_build_lacks(monkeypatch):
    monkeypatch.setattr(detections, "_people_detector", lambda: (None, "no people detection: test build"))
    backend = OpenCVNarrator()
    assert backend.understands("people on the left") == "focus on what happens on the left"
    assert backend.understands("any people?") is None


def test_instructions_are_read_from_the_prompt_as_build_prompt_writes_them():
    prompt = build_prompt(
        PROFILES["narrator"], frame_count=2, span_seconds=1, recent=[], instructions=["a", "b c"], trigger="active"
    )
    assert opencv_focus.instructions_in(prompt.user) == ["a", "b c"]
    assert opencv_focus.instructions_in("no instructions here") == []


def test_latest_region_wins_and_topics_add_up():
    focus = opencv_focus.read_focus(["watch the left", "people please", "now the top right"])
    assert (focus.column, focus.row, focus.topics) == ("right", "top", frozenset({"people"}))


def test_a_region_instruction_limits_motion_to_that_region():
    on_left = say_as(moving_block_left(), "narrator", ("watch the left",))
    assert re.search(r"movement on the left", on_left, re.IGNORECASE)
    on_right = say_as(moving_block_left(), "narrator", ("watch the right",))
    assert STILL.search(on_right)
    assert "on the right" in on_right
    assert "left" not in on_right


def test_a_topic_instruction_limits_the_comment_to_it():
    text = say_as(moving_block_left(), "narrator", ("how is the light?",))
    assert text == "The light is steady; the picture is moderately lit."
    red = [solid_scene((200, 30, 30))] * 3
    assert say_as(red, "narrator", ("colour",)) in ("Mostly red.", "The picture is mostly red.")


def test_a_people_instruction_says_honestly_that_there_is_none():
    assert say_as([backdrop()] * 3, "narrator", ("any people on the left?",)) == "No people on the left."


def test_a_face_instruction_counts_only_faces_in_its_region(astronaut):
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    canvas[104:616, 0:512] = astronaut
    assert say_as([canvas] * 3, "narrator", ("faces on the left",)).startswith("One face, ")
    assert say_as([canvas] * 3, "narrator", ("faces on the right",)) == "No faces on the right."


def test_an_instruction_it_cannot_follow_changes_nothing():
    assert say_as(moving_block_left(), "narrator", ("who is winning?",)) == say(moving_block_left()).strip()
