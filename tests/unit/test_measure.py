"""Scene measurements (``pipeline.measure``) on synthetic frames and real labelled photos.

What alerts and the offline narrator both stand on: motion and where, cuts, light, colour, faces and
people, as numbers and boxes; the narrator's wording of them is tested in test_opencv_narrator.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.measure.cuts import find_cuts
from pipeline.measure.detections import Box, detect_faces, detect_people
from pipeline.measure.motion import measure_motion
from pipeline.measure.observations import observe
from tests.helpers import labelled_photos
from tests.helpers.scenes import backdrop, moving_block_across, moving_block_left, scaled, solid_scene

# --------------------------------------------------------------------------- measurements


def test_motion_in_left_third_is_measured_there():
    motion = measure_motion(moving_block_left())
    assert motion.pairs == 7
    assert motion.amount > 0.0015
    assert motion.columns[0] > 0.9


def test_static_frames_measure_no_motion():
    motion = measure_motion([backdrop()] * 6)
    assert motion.amount == 0.0
    assert motion.pairs == 5


def test_a_light_change_is_not_motion():
    dark = scaled(backdrop(), 0.35)
    motion = measure_motion([dark, dark, backdrop(), backdrop()])
    assert motion.amount < 0.0015


def test_crossing_movement_drifts_right():
    assert measure_motion(moving_block_across()).drift > 0.2
    assert measure_motion(moving_block_across()[::-1]).drift < -0.2


def test_hard_colour_cut_is_found_but_a_light_jump_is_not():
    red, blue = solid_scene((200, 30, 30)), solid_scene((30, 30, 200))
    assert find_cuts([red] * 4 + [blue] * 4, [i * 0.5 for i in range(8)]) == [4]
    dim = scaled(backdrop(), 0.3)
    assert find_cuts([dim] * 4 + [backdrop()] * 4, [i * 0.5 for i in range(8)]) == []


def test_single_frame_and_odd_pixel_formats_are_accepted():
    grey = cv2.cvtColor(backdrop(), cv2.COLOR_RGB2GRAY)
    rgba = cv2.cvtColor(backdrop(), cv2.COLOR_RGB2RGBA)
    obs = observe([grey, rgba], [0.0, 0.5])
    assert obs.frame_count == 2
    assert obs.motion.pairs == 1


# --------------------------------------------------------------------------- faces and people


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A real photo with one frontal face, shipped inside the scikit-image wheel (no download)."""
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


def test_detectors_find_nothing_on_a_blank_picture():
    blank = np.full((720, 1280, 3), 128, np.uint8)
    assert detect_faces(blank) == []
    assert detect_people(blank) == []


def test_people_detector_runs_on_a_real_photo(astronaut):
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    canvas[104:616, 384:896] = astronaut
    for box in detect_people(canvas):  # a half-length portrait: count not asserted, only well-formed boxes
        assert 0 <= box.x < box.x + box.w <= 1 and 0 <= box.y < box.y + box.h <= 1


def test_face_boxes_are_fractions_of_the_picture(astronaut):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    box = faces[0]
    assert isinstance(box, Box)
    assert 0 <= box.x < box.x + box.w <= 1 and 0 <= box.y < box.y + box.h <= 1


# --------------------------------------------------------------------------- labelled photos


@pytest.fixture(scope="module")
def labelled() -> list[labelled_photos.Sample]:
    return labelled_photos.samples()


@pytest.mark.parametrize(("claim", "detect"), [("faces", detect_faces), ("people", detect_people)])
def test_face_and_person_claims_are_precise_on_labelled_photos(labelled, capsys, claim, detect):
    score = labelled_photos.score(labelled, claim, detect)
    with capsys.disabled():
        print(f"\n{claim} on {len(labelled)} labelled photo samples: {score}")
    assert score.right > 0  # precision over no claims at all would prove nothing
    assert score.precision >= 0.9, f"wrong {claim} claims in: {', '.join(score.wrong_in)}"
    if claim == "faces":
        assert score.recall >= 0.8  # the threshold must not buy precision by seeing no one
