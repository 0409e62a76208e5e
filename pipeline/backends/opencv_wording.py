"""The offline narrator's words: measurements turned into sentences, in the chosen profile's voice.

Every sentence states a measurement; nothing is guessed. The phrases vary between comments but are
identical for the same input (picked by the frame index), so a comment can be tested word for word.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from pipeline.backends.opencv_focus import TOPICS, Focus, place
from pipeline.measure.detections import Box
from pipeline.measure.light import Light
from pipeline.measure.motion import MOTION_NONE, Motion
from pipeline.measure.observations import Observations

# Motion amounts (mean changed fraction per frame pair) that make it a little and a lot.
_MOTION_LITTLE = 0.02
_MOTION_LOTS = 0.08
_DOMINANT_SHARE = 0.6  # share of all change (or of one axis) that makes a region "where" it happens
_MIN_DRIFT = 0.2  # horizontal travel (fraction of width) before the movement is said to be heading somewhere
# Light.
_SUDDEN_LIGHT = 40.0  # grey levels between two frames that make a change sudden
_GRADUAL_LIGHT = 20.0  # grey levels over the window that make a change worth saying
_DARK, _BRIGHT = 35.0, 215.0  # mean grey levels below and above which the picture is very dark or bright

_NUMBERS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")


# Wording per profile (profiles/*.yaml, by file name). Each profile overrides some phrases of the
# neutral "narrator" set and falls back to it for the rest; every phrase still states a measurement.
_WORDING: dict[str, dict[str, tuple[str, ...]]] = {
    "narrator": {
        "still": ("Nothing is moving.", "No movement.", "Nothing moves."),
        "same": ("Still the same scene; nothing is moving.", "Nothing has changed; nothing is moving."),
        "little": ("A little movement {w}.", "Something small is moving {w}.", "Slight movement {w}."),
        "some": ("Some movement {w}.", "Something is moving {w}.", "Movement {w}."),
        "lots": ("Lots of movement {w}.", "A lot is moving {w}.", "Busy movement {w}."),
        "scene": ("The new scene is {d}.", "Now a new view, {d}."),
        "faces": ("{n}, {w}.",),
        "people": ("{n} {w}.",),
    },
    "sports": {
        "still": ("A lull: nothing is moving.", "All quiet out there; nothing moves."),
        "same": ("Still nothing happening out there.", "Same picture, no movement at all."),
        "little": ("A touch of movement {w}.", "Something stirs {w}."),
        "some": ("Action {w}!", "Play is moving {w}!"),
        "lots": ("Big action {w}!", "It's all happening {w}!"),
        "scene": ("New angle: {d}.", "We switch to a new view, {d}."),
        "faces": ("{n} in view, {w}.",),
        "people": ("{n} in the picture, {w}!",),
    },
    "security": {
        "still": ("No motion.",),
        "same": ("No change. No motion.",),
        "little": ("Minor motion {w}.",),
        "some": ("Motion {w}.",),
        "lots": ("Heavy motion {w}.",),
        "scene": ("View changed: {d}.",),
        "faces": ("{n} detected {w}.",),
        "people": ("{n} detected {w}.",),
    },
    "nature": {
        "still": ("All is still.", "A hush; nothing stirs."),
        "same": ("The scene rests, unchanged and still.", "Nothing stirs; the scene is unchanged."),
        "little": ("A small stir {w}.", "The faintest movement {w}."),
        "some": ("Something stirs {w}.", "Movement {w}, unhurried."),
        "lots": ("A flurry of activity {w}.", "Everything is in motion {w}."),
        "scene": ("We find ourselves somewhere new, {d}.",),
    },
    "sarcastic": {
        "still": ("Riveting: nothing is moving.", "Thrilling stuff. Nothing moves."),
        "same": ("Still the same scene. Gripping.", "Nothing has changed. Shocking."),
        "little": ("Hold on, a little movement {w}.",),
        "some": ("Oh look, movement {w}.",),
        "lots": ("Wow, so much going on {w}.",),
        "scene": ("Finally, something new: {d}.",),
    },
}


def _pick(options: Sequence[str], seed: int, key: str) -> str:
    """A template chosen by (seed, key): varied between comments, identical for the same input."""
    return options[zlib.crc32(f"{seed}:{key}".encode()) % len(options)]


def _say(style: str, key: str, seed: int, **fields: str) -> str:
    """The profile's phrase for ``key`` (the neutral one if it has none), filled in."""
    options = _WORDING.get(style, {}).get(key) or _WORDING["narrator"][key]
    return _pick(options, seed, key).format(**fields)


def _where(motion: Motion) -> str:
    """Where the change is: one third when it dominates, two neighbouring thirds, or spread out."""
    cols, rows = motion.columns, motion.rows
    col = None
    if max(cols) >= _DOMINANT_SHARE:
        col = ("left", "centre", "right")[int(np.argmax(cols))]
    elif cols[0] + cols[1] >= 0.8:
        col = "left of centre"
    elif cols[1] + cols[2] >= 0.8:
        col = "right of centre"
    row = {0: "top", 2: "bottom"}.get(int(np.argmax(rows))) if max(rows) >= _DOMINANT_SHARE else None
    if col is None:
        if row:
            return f"along the {row}" if abs(motion.drift) >= _MIN_DRIFT else f"near the {row}"
        if abs(motion.drift) >= _MIN_DRIFT:
            return "across the picture"
        return "all over the picture" if motion.amount >= _MOTION_LOTS and min(cols) >= 0.15 else "in several places"
    if col.endswith("of centre"):
        return f"near the {row}, {col}" if row else col
    if row:
        return f"near the {row}" if col == "centre" else f"near the {row} {col}"
    return "in the centre" if col == "centre" else f"on the {col}"


def _count(n: int, one: str, many: str) -> str:
    word = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    return f"{word} {one if n == 1 else many}"


def _places(boxes: Sequence[Box]) -> str:
    found = list(dict.fromkeys(place(*b.centre) for b in boxes))
    if len(found) > 2:
        return "across the picture"
    return " and ".join(found)


def _located(sentence: str, where: str | None) -> str:
    """Say which region a sentence measured ("It got darker on the left."), when it was only one."""
    if where is None:
        return sentence
    body = sentence.rstrip(".!")
    return f"{body} {where}{sentence[len(body) :]}"


def _motion_sentences(motion: Motion, seed: int, style: str, region: str | None) -> list[str]:
    if motion.amount < MOTION_NONE:
        return [_located(_say(style, "still", seed), region)]
    key = "little" if motion.amount < _MOTION_LITTLE else "some" if motion.amount < _MOTION_LOTS else "lots"
    out = [_say(style, key, seed, w=region or _where(motion))]
    if abs(motion.drift) >= _MIN_DRIFT:
        side = "right" if motion.drift > 0 else "left"
        out.append(_pick(("It is heading {s}.", "It drifts to the {s}."), seed, "drift").format(s=side))
    return out


def _motion_or_wait(obs: Observations, seed: int, style: str, region: str | None) -> list[str]:
    """Motion sentences, or that one frame cannot show any; nothing when the light made frames incomparable."""
    if obs.motion.pairs:
        return _motion_sentences(obs.motion, seed, style, region)
    return ["Just one frame so far; nothing to compare yet."] if obs.shot_frames == 1 else []


def _light_sentence(light: Light, seed: int) -> str | None:
    delta = light.after - light.before
    if abs(delta) < _GRADUAL_LIGHT:
        return None
    if light.before < _DARK + 10 and light.after >= 80 and light.largest_step >= _SUDDEN_LIGHT:
        return _pick(("Much brighter now, as if a light came on.", "It suddenly got bright."), seed, "on")
    if light.after < _DARK + 10 and light.before >= 80 and light.largest_step >= _SUDDEN_LIGHT:
        return _pick(("The picture went dark, as if the lights went off.", "It suddenly went dark."), seed, "off")
    sudden = light.largest_step >= _SUDDEN_LIGHT and light.largest_step >= 0.6 * abs(delta)
    if delta > 0:
        options = ("It suddenly got brighter.",) if sudden else ("It is getting brighter.", "Brighter than before.")
    else:
        options = ("It suddenly got darker.",) if sudden else ("It is getting darker.", "Darker than before.")
    return _pick(options, seed, "light")


def _brightness(level: float) -> str:
    """How light the picture is, in words; bounds in grey levels 0..255."""
    for bound, words in ((_DARK, "very dark"), (80, "dim"), (170, "moderately lit"), (_BRIGHT, "bright")):
        if level < bound:
            return words
    return "very bright"


def _level_sentence(level: float) -> str | None:
    if level < _DARK:
        return "The picture is very dark."
    if level > _BRIGHT:
        return "The picture is very bright."
    return None


def _colour_sentence(before: str | None, after: str | None, seed: int, describe: bool) -> str | None:
    if after is not None and (describe or before is None):
        if describe:
            return _pick(("Mostly {c}.", "The picture is mostly {c}."), seed, "colour").format(c=after)
        return f"Now mostly {after}."
    if before is not None and after is not None and before != after:
        return _pick(("The colours shifted from {a} to {b}.", "From {a} to {b}."), seed, "shift").format(
            a=before, b=after
        )
    if before is not None and after is None:
        return f"No longer mostly {before}."
    return None


_DETECTIONS = {"faces": ("face", "faces"), "people": ("person", "people")}


def _detection_sentence(
    key: str, obs: Observations, seed: int, style: str, region: str | None, asked: bool
) -> str | None:
    """The count of confident detections; when asked for, also that there are none (if this build can look)."""
    boxes = obs.faces if key == "faces" else obs.people
    one, many = _DETECTIONS[key]
    if boxes:
        return _say(style, key, seed, n=_count(len(boxes), one, many), w=_places(boxes))
    if boxes is not None and asked:
        return f"No {many} {region or 'in view'}."
    return None


def _detections_sentences(obs: Observations, seed: int, style: str) -> list[str]:
    return [s for key in _DETECTIONS if (s := _detection_sentence(key, obs, seed, style, None, asked=False))]


def _scene_sentence(obs: Observations, seed: int, style: str) -> str:
    """A new shot described from what can be measured in one frame: light and colour."""
    looks = _brightness(obs.light.after) + (f" and mostly {obs.colour_after}" if obs.colour_after else "")
    return _say(style, "scene", seed, d=looks)


def _topic_sentences(topic: str, obs: Observations, seed: int, style: str, region: str | None) -> list[str]:
    """What the narrator says about one topic an instruction asked for; always something it measured."""
    if topic in _DETECTIONS:
        sentence = _detection_sentence(topic, obs, seed, style, region, asked=True)
        return [sentence] if sentence else []
    if topic == "motion":
        return _motion_or_wait(obs, seed, style, region)
    if topic == "light":
        change = _light_sentence(obs.light, seed)
        if change is None:
            level = _brightness(obs.light.after)
            change = (
                f"The light is steady; the picture is {level}." if obs.shot_frames > 1 else f"The picture is {level}."
            )
        return [_located(change, region)]
    colour = _colour_sentence(obs.colour_before, obs.colour_after, seed, describe=obs.colour_before == obs.colour_after)
    return [_located(colour or "No single colour dominates.", region)]


def compose(
    obs: Observations, seed: int, trigger: str = "active", style: str = "narrator", focus: Focus | None = None
) -> list[str]:
    """Sentences, most important first; each one states a measurement, nothing is guessed.

    ``style`` picks the profile's wording; ``focus`` limits the comment to the region and topics asked for.
    A cut is not announced (the UI already notes it): the comment describes the new scene instead."""
    if obs.frame_count == 0:
        return ["No picture yet."]
    focus = focus or Focus()
    region = focus.where
    if focus.topics:
        topical = [
            s for topic in TOPICS if topic in focus.topics for s in _topic_sentences(topic, obs, seed, style, region)
        ]
        if topical:
            return topical
    detections = _detections_sentences(obs, seed, style)
    light_change = _light_sentence(obs.light, seed)
    if obs.cuts > 0 or trigger == "scene_cut":
        motion = _motion_sentences(obs.motion, seed, style, region) if obs.motion.pairs else []
        return [
            _located(_scene_sentence(obs, seed, style), region),
            *detections,
            *motion,
            *([_located(light_change, region)] if light_change else []),
        ]
    moving = obs.motion.amount >= MOTION_NONE
    if obs.motion.pairs and not (moving or light_change) and obs.colour_before == obs.colour_after:
        level = _level_sentence(obs.light.after)
        return [_located(_say(style, "same", seed), region), *detections, *([_located(level, region)] if level else [])]
    sentences: list[str] = []
    if light_change:
        sentences.append(_located(light_change, region))
    sentences.extend(_motion_or_wait(obs, seed, style, region))
    sentences.extend(detections)
    describe = obs.shot_frames == 1
    if not light_change and describe and (level := _level_sentence(obs.light.after)):
        sentences.append(_located(level, region))
    if colour := _colour_sentence(obs.colour_before, obs.colour_after, seed, describe):
        sentences.append(_located(colour, region))
    return sentences


def limit_words(sentences: Sequence[str], max_words: int) -> str:
    """Whole sentences while they fit in ``max_words`` (a word ≈ a token); the first is always whole,
    since half a sentence read aloud says less than a few words too many."""
    kept: list[str] = []
    used = 0
    for sentence in sentences:
        words = len(sentence.split())
        if kept and used + words > max_words:
            break
        kept.append(sentence)
        used += words
    return " ".join(kept)
