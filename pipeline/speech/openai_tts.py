"""Speech from an OpenAI-compatible server (``POST {base_url}/audio/speech``): OpenAI, Kokoro-FastAPI, vLLM-Omni…

Raw ``pcm`` is requested (16-bit little-endian mono at 24000 Hz, OpenAI's documented format), so there
is nothing to decode and every chunk can be played the moment it arrives. Servers that ignore the
format and answer ``audio/wav`` are read too: the sample rate comes from the WAV header.

Why httpx and not the ``openai`` package: httpx is already a dependency (the HTTP video sources use it),
streams the body as raw bytes as they arrive, and takes separate connect and read timeouts, so a dead
server fails in seconds with a message that says which; the ``openai`` package would add a dependency
(and its own retries and error types) to make one POST.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from pipeline.errors import ConfigError, OnlookerError
from pipeline.prompts import Voice
from pipeline.sources.urls import exception_chain, mask_url, scrub
from pipeline.speech.engines import Speech
from pipeline.speech.espeak import parse_header

if TYPE_CHECKING:
    from pipeline.config import Settings

PCM_RATE = 24000  # OpenAI's "pcm": 24 kHz, 16-bit signed little-endian, mono
NORMAL_WPM = 170  # the words per minute that mean speed 1.0
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # the range OpenAI accepts
OPENAI_VOICES = ("alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer")
FALLBACK_VOICE = "alloy"
MESSAGE_CHARS = 200  # of a server's error text, so a stack trace or HTML page stays one readable line
ERROR_BODY_BYTES = 16384
SNIFF_BYTES = 12  # "RIFF" size "WAVE": enough to tell a WAV from raw samples
URL_HINT = "--tts-url / ONLOOKER_TTS_URL"
KEY_HINT = "--tts-api-key / ONLOOKER_TTS_API_KEY"
COMPRESSED = ("mpeg", "mp3", "ogg", "opus", "aac", "flac", "webm", "mp4")


def speed_for(voice: Voice) -> float:
    """The request's ``speed``: the profile's words per minute relative to a normal 170, in OpenAI's range."""
    return round(min(MAX_SPEED, max(MIN_SPEED, voice.rate / NORMAL_WPM)), 3)


def server_message(body: bytes) -> str:
    """The human part of an error body (OpenAI ``{"error": {"message"}}``, FastAPI ``{"detail"}``, or text).

    Collapsed to one line and cut to 200 characters, so it can sit inside a user-facing message.
    """
    text = body.decode("utf-8", errors="replace").strip()
    with contextlib.suppress(ValueError):
        text = _message_of(json.loads(text)) or text
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _message_of(data: object) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, list):  # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
        return "; ".join(filter(None, (_message_of(item) for item in data)))
    if isinstance(data, dict):
        loc = data.get("loc")
        if data.get("msg") and isinstance(loc, list) and loc:
            return f"{loc[-1]}: {_message_of(data['msg'])}"
        for key in ("message", "msg", "error", "detail"):  # Kokoro: {"detail": {"error": code, "message": text}}
            if data.get(key):
                return _message_of(data[key])
    return ""


class _Decoder:
    """Bytes as they arrive → Speech chunks; keeps a partial sample (or WAV header) for the next block."""

    def __init__(self, wav: bool | None, where: str) -> None:
        self.where = where  # "the speech server at URL", for error messages
        self.wav = wav  # None: not told; decided by sniffing the first bytes
        self.buffer = b""
        self.rate: int | None = None if wav is not False else PCM_RATE
        self.channels = 1
        self.samples = 0

    def feed(self, block: bytes) -> Speech | None:
        self.buffer += block
        if self.wav is None:
            if len(self.buffer) < SNIFF_BYTES:
                return None
            self.wav = self.buffer[:4] == b"RIFF" and self.buffer[8:12] == b"WAVE"
            self.rate = None if self.wav else PCM_RATE
        if self.rate is None and not self._read_header():
            return None
        frame = 2 * self.channels
        usable = len(self.buffer) // frame * frame
        if not usable:
            return None
        samples = np.frombuffer(self.buffer[:usable], dtype="<i2").astype(np.int16)
        self.buffer = self.buffer[usable:]
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1).astype(np.int16)
        self.samples += len(samples)
        assert self.rate is not None
        return Speech(self.rate, samples)

    def finish(self) -> Speech | None:
        """Whatever a short (under 12 bytes) raw reply left in the sniffing buffer."""
        if self.wav is None and self.buffer:
            self.wav, self.rate = False, PCM_RATE
            return self.feed(b"")
        return None

    def _read_header(self) -> bool:
        data = self.buffer
        if len(data) >= SNIFF_BYTES and (data[:4] != b"RIFF" or data[8:12] != b"WAVE"):
            raise self._bad("it is labelled WAV but is not")
        header = parse_header(data)
        if header is None:
            return False
        if data[12:16] != b"fmt ":
            raise self._bad("its WAV header has no format chunk where expected")
        fmt, channels = struct.unpack_from("<HH", data, 20)
        bits = struct.unpack_from("<H", data, 34)[0]
        if fmt not in (1, 0xFFFE) or bits != 16 or channels < 1:
            raise self._bad(f"it is {bits}-bit WAV (format {fmt}); only 16-bit PCM WAV can be played")
        self.rate, self.channels = header[0], channels
        self.buffer = data[header[1] :]
        return True

    def _bad(self, why: str) -> OnlookerError:
        return OnlookerError(f"{self.where} sent audio that cannot be played: {why}")


class OpenAISpeechEngine:
    """Text to speech via ``POST {base_url}/audio/speech``; one connection pool shared by every session."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str = "tts-1",
        voice: str | None = None,
        api_key: str | None = None,
        timeout: float = 20.0,
        connect_timeout: float = 5.0,
    ) -> None:
        base = base_url.strip().rstrip("/")
        if base.endswith("/audio/speech"):  # the whole endpoint pasted: keep the API root
            base = base[: -len("/audio/speech")]
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{URL_HINT} must be an http:// or https:// URL such as http://localhost:8880/v1,"
                f" not {mask_url(base_url)!r}"
            )
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("speech server timeouts must be positive")
        self.base_url = base
        self.speech_url = f"{base}/audio/speech"
        self.model = model
        self.voice = voice or None
        self.api_key = api_key or None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout))
        self._lock = threading.Lock()
        self._voices: list[str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAISpeechEngine:
        """The engine for ``--tts openai``: URL, model, voice and key from the run's settings."""
        if not settings.tts_url:
            raise ConfigError(f"--tts openai needs {URL_HINT}, e.g. http://localhost:8880/v1")
        return cls(settings.tts_url, settings.tts_model, settings.tts_voice, settings.tts_api_key)

    @property
    def default_voice(self) -> str:
        """The configured voice (``--tts-voice``), else OpenAI's "alloy"."""
        return self.voice or FALLBACK_VOICE

    def voices(self) -> list[str]:
        """The server's voices (``GET /audio/voices``, as Kokoro-FastAPI offers), asked once; OpenAI's list
        when the server cannot say. The configured voice is always included."""
        with self._lock:
            if self._voices is None:
                names = self._fetch_voices() or list(OPENAI_VOICES)
                if self.voice and self.voice not in names:
                    names.append(self.voice)
                self._voices = names
            return list(self._voices)

    def voice_for(self, voice: Voice) -> str:
        """The voice name to send: the profile's/UI's pick when this server knows it, else the default."""
        return voice.engine_voice if voice.engine_voice in self.voices() else self.default_voice

    def stream(self, text: str, voice: Voice) -> Iterator[Speech]:
        """Audio chunks as the server sends them; raises OnlookerError with a one-line reason on failure."""
        if not text.strip():
            return
        name = self.voice_for(voice)
        body = {"model": self.model, "input": text, "voice": name, "response_format": "pcm", "speed": speed_for(voice)}
        try:
            with self._client.stream("POST", self.speech_url, json=body) as response:
                yield from self._audio(response, name)
        except httpx.HTTPError as exc:
            raise self._error(self._describe_error(exc)) from exc

    def close(self) -> None:
        """Close the connection pool; the engine cannot speak afterwards."""
        self._client.close()

    # --- helpers ---
    def _audio(self, response: httpx.Response, voice: str) -> Iterator[Speech]:
        if not 200 <= response.status_code < 300:
            detail = server_message(self._read_some(response))
            raise self._error(self._describe_status(response, detail, voice))
        where = f"the speech server at {mask_url(self.speech_url)}"
        decoder = _Decoder(self._is_wav(response), where)
        for block in response.iter_bytes():
            speech = decoder.feed(block)
            if speech is not None and len(speech.samples):
                yield speech
        last = decoder.finish()
        if last is not None and len(last.samples):
            yield last
        if not decoder.samples:
            raise self._error(
                f"{where} sent no audio (an empty reply) — check that it offers the model {self.model!r}"
                f" and the voice {voice!r}"
            )

    def _fetch_voices(self) -> list[str]:
        try:
            response = self._client.get(
                f"{self.base_url}/audio/voices",
                timeout=httpx.Timeout(min(self.timeout, 5.0), connect=self.connect_timeout),
            )
            if response.status_code != 200:
                return []
            data: Any = response.json()
        except (httpx.HTTPError, ValueError):
            return []
        listed = data.get("voices") if isinstance(data, dict) else data
        if not isinstance(listed, list):
            return []
        names = []
        for item in listed:
            if isinstance(item, dict):
                item = item.get("id") or item.get("voice_id") or item.get("name")
            if isinstance(item, str) and item and item not in names:
                names.append(item)
        return names

    def _is_wav(self, response: httpx.Response) -> bool | None:
        """True for a WAV label, None (sniff the bytes) for raw or unlabelled audio; raises for anything else."""
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if "wav" in ctype:
            return True
        where = f"the speech server at {mask_url(self.speech_url)}"
        if any(kind in ctype for kind in COMPRESSED):
            raise self._error(f"{where} sent {ctype} although raw pcm was asked for; it must offer pcm or wav output")
        if ctype.startswith("text/") or ctype.endswith("json"):
            detail = server_message(self._read_some(response)) or "no details"
            raise self._error(f"{where} answered with {ctype} instead of audio: {detail}")
        return None

    @staticmethod
    def _read_some(response: httpx.Response) -> bytes:
        body = b""
        for block in response.iter_bytes():
            body += block
            if len(body) >= ERROR_BODY_BYTES:
                break
        return body

    def _describe_status(self, response: httpx.Response, detail: str, voice: str) -> str:
        status = response.status_code
        base = f"HTTP {status} from the speech server at {mask_url(self.speech_url)}"
        said = f" (server: {detail})" if detail else ""
        if status in (401, 403):
            if self.api_key:
                return f"{base}: the API key was rejected{said}; check {KEY_HINT}"
            return f"{base}: it needs an API key{said}; set {KEY_HINT}"
        if status == 404:
            return (
                f"{base}: not found{said} — {URL_HINT} should end in /v1 (e.g. http://localhost:8880/v1)"
                f" and the server must offer /audio/speech with the model {self.model!r}"
            )
        if 300 <= status < 400:
            target = mask_url(response.headers.get("location", "")) or "elsewhere"
            return f"{base}: it redirects to {target}; put the final address in {URL_HINT}"
        if status >= 500:
            return f"{base}: {detail or 'the server failed'} — try again, or check the speech server's log"
        return f"{base}: {detail or 'the request was refused'} (model {self.model!r}, voice {voice!r})"

    def _describe_error(self, exc: httpx.HTTPError) -> str:
        where = mask_url(self.base_url)
        detail = scrub(str(exc), self.base_url) or type(exc).__name__
        chain = list(exception_chain(exc))
        if isinstance(exc, httpx.ConnectTimeout):
            return (
                f"cannot reach the speech server at {where}: no answer within {self.connect_timeout:g} s"
                " — is it running and reachable from this machine?"
            )
        if isinstance(exc, httpx.ReadTimeout):
            return (
                f"the speech server at {where} sent nothing for {self.timeout:g} s"
                " — it may be busy or still loading its model; try again"
            )
        if isinstance(exc, httpx.ConnectError):
            unreachable = f"cannot reach the speech server at {where}"
            if any(isinstance(e, ConnectionRefusedError) for e in chain):
                return f"{unreachable}: connection refused — is it running, and is --tts-url right?"
            if any(isinstance(e, socket.gaierror) for e in chain):
                host = urlsplit(self.base_url).hostname or "?"
                return f"{unreachable}: the host name {host!r} does not resolve; check --tts-url"
            return f"{unreachable}: {detail}"
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out talking to the speech server at {where}: {detail}"
        if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
            return f"the connection to the speech server at {where} broke off: {detail}"
        return f"HTTP error from the speech server at {where}: {detail}"

    def _error(self, message: str) -> OnlookerError:
        """The error to raise, with the API key and URL credentials taken out of anything a server echoed."""
        message = scrub(" ".join(message.split()), self.base_url)
        if self.api_key:
            message = message.replace(self.api_key, "***")
        return OnlookerError(message)
