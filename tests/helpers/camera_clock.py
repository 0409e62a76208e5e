"""A capture clock drawn into video frames, so a reader can tell how old each decoded frame is.

The test cameras (``tests/helpers/rtsp_camera.py --clock``, the MJPEG clock camera in ``bench/sources.py``)
draw the moment of capture, milliseconds since the epoch, as black and white blocks across the top of
the picture; blocks this size survive JPEG and H.264 at any sane quality. Pure Python, so Debian's
Python (which runs the RTSP camera) can use it without NumPy.
"""

from __future__ import annotations

from typing import Any

CLOCK_BITS = 44
BLOCK = 24  # pixels per bit block: survives H.264 at any sane bitrate


def _block(bit: int, width: int) -> tuple[int, int]:
    """Top-left corner of the block that carries ``bit``."""
    per_row = width // BLOCK
    return (bit % per_row) * BLOCK, (bit // per_row) * BLOCK


def read_clock(rgb: Any) -> float:
    """The capture time (Unix seconds) drawn into a decoded frame (an H×W×3 array) by ``--clock``."""
    millis = 0
    for bit in range(CLOCK_BITS):
        x, y = _block(bit, rgb.shape[1])
        millis = millis << 1 | int(rgb[y + BLOCK // 2, x + BLOCK // 2, 1] > 128)
    return millis / 1000


def clock_frame(width: int, height: int, millis: int) -> bytes:
    """One I420 frame: mid-grey, with ``millis`` as bit blocks (white = 1) in the top band."""
    luma = bytearray(b"\x80" * (width * height))
    for bit in range(CLOCK_BITS):
        value = 255 if millis >> (CLOCK_BITS - 1 - bit) & 1 else 0
        x, y = _block(bit, width)
        for row in range(y, y + BLOCK):
            luma[row * width + x : row * width + x + BLOCK] = bytes([value]) * BLOCK
    chroma = b"\x80" * (width * height // 2)
    return bytes(luma) + chroma


def draw_clock(picture: Any, millis: int) -> None:
    """Draw ``millis`` into a greyscale picture (an H×W NumPy array) in place, as ``clock_frame`` does."""
    for bit in range(CLOCK_BITS):
        x, y = _block(bit, picture.shape[1])
        picture[y : y + BLOCK, x : x + BLOCK] = 255 if millis >> (CLOCK_BITS - 1 - bit) & 1 else 0
