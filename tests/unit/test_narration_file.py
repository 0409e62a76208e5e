"""The narration streamed to disk: an Ogg Opus file on the media timeline, read back with PyAV (FFmpeg)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np

from pipeline.recording.narration_file import RATE, NarrationFile


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples and their rate, as FFmpeg decodes the file."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        parts = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(parts).astype(np.float32), stream.rate


def loudness(samples: np.ndarray, rate: int, start: float, end: float) -> float:
    part = samples[round(start * rate) : round(end * rate)]
    return float(np.sqrt(np.mean(np.square(part)))) if len(part) else 0.0


def test_speech_lands_at_its_media_time_and_silence_fills_the_rest(tmp_path: Path) -> None:
    narration = NarrationFile(tmp_path / "narration.ogg")
    narration.add(2.0, tone(1.0))
    narration.add(1.0, tone(0.5))  # asked for a time already written: it follows what is there
    narration.fill_to(6.0)
    narration.close()
    samples, rate = decode(tmp_path / "narration.ogg")
    assert abs(len(samples) / rate - 6.0) < 0.05
    speech = loudness(samples, rate, 2.05, 3.45)  # both utterances, back to back
    assert speech > 0.2 and loudness(samples, rate, 3.1, 3.4) > 0.2  # audible where it was said (RMS of the tone 0.26)
    for start, end in ((0.0, 1.9), (3.6, 6.0)):
        assert loudness(samples, rate, start, end) < 0.01 * speech, (start, end)  # silent elsewhere
    assert narration.spoken == round(1.5 * RATE)


CRASH = """
import os, sys
sys.path.insert(0, {root!r})
from pipeline.recording.narration_file import NarrationFile, RATE
import numpy as np
narration = NarrationFile(__import__("pathlib").Path({path!r}))
tone = (np.sin(np.arange(RATE // 10) / RATE * 2 * np.pi * 440) * 12000).astype(np.int16)
for k in range(50):  # 5 s of speech, a tenth of a second at a time, as the speaker sends it
    narration.add(k / 10, tone)
os.kill(os.getpid(), 9)
"""


def test_a_crash_leaves_the_narration_readable_up_to_its_last_fraction_of_a_second(tmp_path: Path) -> None:
    path = tmp_path / "narration.ogg"
    root = str(Path(__file__).resolve().parents[2])
    result = subprocess.run([sys.executable, "-c", CRASH.format(root=root, path=str(path))], timeout=60)
    assert result.returncode == -9  # killed, nothing closed
    samples, rate = decode(path)
    assert len(samples) / rate > 4.5  # of the 5 s written, all but the last page
