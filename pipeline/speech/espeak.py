"""Offline speech with espeak-ng (a Debian package, no model weights): the default voice.

espeak-ng writes a streaming WAV to stdout whose size fields are placeholders, so the header is
parsed by hand: the sample rate from the fmt chunk, then everything after "data" is 16-bit mono.
Audio is handed on as it is read, so a long sentence starts playing before it is all synthesised.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from functools import cached_property

import numpy as np

from pipeline.errors import OnlookerError
from pipeline.prompts import Voice
from pipeline.speech.engines import Speech

READ_BYTES = 8192  # ~0.19 s at 22050 Hz


def parse_header(data: bytes) -> tuple[int, int] | None:
    """(sample rate, offset of the first sample) once the header is complete, else None."""
    if len(data) >= 12 and (data[:4] != b"RIFF" or data[8:12] != b"WAVE"):
        raise OnlookerError("espeak-ng did not produce WAV audio")
    start = data.find(b"data", 12)
    if len(data) < 28 or start < 0 or len(data) < start + 8:
        return None
    return struct.unpack_from("<I", data, 24)[0], start + 8


def parse_wav(data: bytes) -> Speech:
    """Read a whole streaming WAV (RIFF header with bogus sizes) into samples."""
    header = parse_header(data)
    if header is None:
        raise OnlookerError("espeak-ng did not produce WAV audio" if len(data) < 12 else "espeak-ng's WAV is cut short")
    rate, offset = header
    body = data[offset:]
    return Speech(rate, np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.int16))


class EspeakEngine:
    """Speaks text with the profile's voice hints (voice name, words per minute, pitch)."""

    name = "espeak"
    default_voice = "en-us"

    def __init__(self, binary: str | None = None, timeout: float = 30.0) -> None:
        found = binary or shutil.which("espeak-ng")
        if not found:
            raise OnlookerError("espeak-ng is not installed; run scripts/setup.sh (or apt-get install espeak-ng)")
        self.binary = found
        self.timeout = timeout

    def voices(self) -> list[str]:
        """Language voices espeak-ng knows (``en-us``, ``de``, ``fr-fr``…), read once."""
        return list(self._voices)

    @cached_property
    def _voices(self) -> tuple[str, ...]:
        try:
            listing = subprocess.run([self.binary, "--voices"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return (self.default_voice,)
        names = [line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1]
        return tuple(sorted(set(names))) or (self.default_voice,)

    def close(self) -> None:
        """Nothing to release: each utterance is its own espeak-ng process, ended with it."""

    def synthesize(self, text: str, voice: Voice) -> Speech:
        """One whole utterance (the chunks of ``stream`` joined)."""
        chunks = list(self.stream(text, voice))
        rate = chunks[0].sample_rate if chunks else 22050
        return Speech(rate, np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.int16))

    def stream(self, text: str, voice: Voice) -> Iterator[Speech]:
        """Audio as espeak-ng writes it; raises OnlookerError (with espeak's own message) on failure."""
        cmd = [self.binary, "--stdout", "-v", voice.engine_voice, "-s", str(voice.rate), "-p", str(voice.pitch), text]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timer = threading.Timer(self.timeout, proc.kill)  # a hung espeak must not hang the speaker
        timer.start()
        try:
            yield from self._read(proc)
            if proc.wait() != 0:
                message = proc.stderr.read().decode(errors="replace").strip()[:200] if proc.stderr else ""
                if not timer.is_alive():
                    raise OnlookerError(f"espeak-ng took longer than {self.timeout:g} s")
                raise OnlookerError(f"espeak-ng failed: {message or 'exit code ' + str(proc.returncode)}")
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()

    @staticmethod
    def _read(proc: subprocess.Popen[bytes]) -> Iterator[Speech]:
        assert proc.stdout is not None
        buffer, header = b"", None
        while block := proc.stdout.read1(READ_BYTES):  # whatever is ready, without waiting for more
            buffer += block
            if header is None:
                header = parse_header(buffer)
                if header is None:
                    continue
                buffer = buffer[header[1] :]
            usable = len(buffer) // 2 * 2
            if usable:
                samples = np.frombuffer(buffer[:usable], dtype="<i2").astype(np.int16)
                buffer = buffer[usable:]
                yield Speech(header[0], samples)
        if header is None and proc.wait() == 0:
            raise OnlookerError("espeak-ng did not produce WAV audio")
