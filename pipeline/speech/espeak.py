"""Offline speech with espeak-ng (a Debian package, no model weights): the default voice.

espeak-ng writes a streaming WAV to stdout whose size fields are placeholders, so the header is
parsed by hand: the sample rate from the fmt chunk, then everything after "data" is 16-bit mono.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass

import numpy as np

from pipeline.errors import OnlookerError
from pipeline.prompts import Voice


@dataclass(frozen=True, slots=True)
class Speech:
    """Mono 16-bit audio for one utterance."""

    sample_rate: int
    samples: np.ndarray  # int16, shape (n,)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def parse_wav(data: bytes) -> Speech:
    """Read espeak-ng's streaming WAV (RIFF header with bogus sizes) into samples."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise OnlookerError("espeak-ng did not produce WAV audio")
    sample_rate = struct.unpack_from("<I", data, 24)[0]
    start = data.find(b"data", 12)
    if start < 0:
        raise OnlookerError("espeak-ng's WAV has no data chunk")
    body = data[start + 8 :]
    body = body[: len(body) // 2 * 2]
    return Speech(sample_rate, np.frombuffer(body, dtype="<i2").astype(np.int16))


class EspeakEngine:
    """Speaks text with the profile's voice hints (voice name, words per minute, pitch)."""

    name = "espeak"

    def __init__(self, binary: str | None = None, timeout: float = 30.0) -> None:
        found = binary or shutil.which("espeak-ng")
        if not found:
            raise OnlookerError("espeak-ng is not installed; run scripts/setup.sh (or apt-get install espeak-ng)")
        self.binary = found
        self.timeout = timeout

    def synthesize(self, text: str, voice: Voice) -> Speech:
        """One utterance; raises OnlookerError (with espeak's own message) when it fails."""
        cmd = [self.binary, "--stdout", "-v", voice.engine_voice, "-s", str(voice.rate), "-p", str(voice.pitch), text]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise OnlookerError(f"espeak-ng took longer than {self.timeout:g} s") from None
        if done.returncode != 0:
            raise OnlookerError(f"espeak-ng failed: {done.stderr.decode(errors='replace').strip()[:200]}")
        return parse_wav(done.stdout)
