"""The OpenAI-compatible speech engine against a real HTTP server on the loopback interface.

The minimal loopback server below stands in for Kokoro-FastAPI / vLLM-Omni / OpenAI only because no
real TTS server can run offline here. It speaks real HTTP/1.1 (chunked bodies, flushed in pieces of
odd sizes) and sends real speech: espeak-ng audio resampled to OpenAI's pcm rate of 24000 Hz. Each
engine talks to ``http://127.0.0.1:PORT/<mode>/v1``, and the mode picks how the server answers.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import soxr

from pipeline.config import load_settings
from pipeline.errors import ConfigError, OnlookerError
from pipeline.prompts import Voice
from pipeline.speech.engines import Speech
from pipeline.speech.espeak import EspeakEngine
from pipeline.speech.openai_tts import OPENAI_VOICES, OpenAISpeechEngine, server_message

TEXT = "A long ball over the top, and the striker is through on goal."
KEY = "sk-test-9f8e7d6c5b4a"
KOKORO_VOICES = ["af_bella", "am_adam", "bf_emma"]
PIECES = (4801, 1, 2999, 8193)  # odd sizes, so samples are split across chunks from the first one on


class Audio:
    """What the server sends: espeak-ng speech at its own rate, and resampled to 24000 Hz."""

    def __init__(self) -> None:
        spoken = EspeakEngine().synthesize(TEXT, Voice())
        self.espeak = spoken
        self.pcm24 = np.asarray(soxr.resample(spoken.samples, spoken.sample_rate, 24000), dtype=np.int16)


class TTSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, audio: Audio) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.audio = audio
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # {"method", "path", "body", "auth"}
        self.gate = threading.Event()  # the test opens it once it holds the first chunk
        self.gate_was_opened: list[bool] = []
        self.stopping = threading.Event()  # set at teardown so a "slow" answer ends at once

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up early (a timeout test) is expected


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TTSServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self, body: object) -> None:
        with self.server.lock:
            entry = {"method": self.command, "path": self.path, "body": body, "auth": self.headers.get("Authorization")}
            self.server.requests.append(entry)

    def _route(self, endpoint: str) -> str | None:
        match = re.fullmatch(rf"/(\w+)/v1/audio/{endpoint}", self.path)
        return match.group(1) if match else None

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")  # wfile is unbuffered: sent at once

    def _stream(self, data: bytes, ctype: str, gated: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        start, n = 0, 0
        while start < len(data):
            piece = data[start : start + PIECES[n % len(PIECES)]]
            self._chunk(piece)
            if gated and n == 0:
                self.server.gate_was_opened.append(self.server.gate.wait(5))
            start, n = start + len(piece), n + 1
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        self._record(None)
        if self._route("voices") == "kokoro":
            self._reply(200, json.dumps({"voices": KOKORO_VOICES}).encode())
        else:
            self._reply(404, b'{"detail":"Not Found"}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self._record(body)
        mode = self._route("speech")
        audio = self.server.audio
        pcm = audio.pcm24.astype("<i2").tobytes()
        if mode in ("ok", "kokoro", "gated"):
            assert body["response_format"] == "pcm" and body["input"] == TEXT
            self._stream(pcm, "audio/pcm", gated=mode == "gated")
        elif mode == "wav":  # a server that ignores "pcm": a streaming WAV with placeholder sizes, at 22050 Hz
            rate = audio.espeak.sample_rate
            header = b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            self._stream(header + b"data\xff\xff\xff\xff" + audio.espeak.samples.astype("<i2").tobytes(), "audio/wav")
        elif mode == "unauthorized":
            said = f"Incorrect API key provided: {self.headers.get('Authorization', '')}"
            self._reply(401, json.dumps({"error": {"message": said, "type": "invalid_request_error"}}).encode())
        elif mode == "broken":
            said = "CUDA out of memory.\nTraceback (most recent call last):\n  File 'x.py'"
            self._reply(500, json.dumps({"error": {"message": said, "code": 500}}).encode())
        elif mode == "invalid":
            detail = [{"loc": ["body", "voice"], "msg": "Voice 'zz' not found", "type": "value_error"}]
            self._reply(422, json.dumps({"detail": detail}).encode())
        elif mode == "chatty":
            self._reply(503, ("Service Unavailable " * 60).encode(), "text/plain")
        elif mode == "empty":
            self._reply(200, b"", "audio/pcm")
        elif mode == "mp3":
            self._reply(200, b"ID3\x04" + bytes(400), "audio/mpeg")
        elif mode == "slow":
            self.server.stopping.wait(3)  # answers long after the engine's 0.5 s read timeout
            self._reply(200, pcm, "audio/pcm")
        else:
            self._reply(404, b'{"detail":"Not Found"}')


@pytest.fixture(scope="module")
def audio() -> Audio:
    return Audio()


@pytest.fixture
def server(audio: Audio) -> Iterator[TTSServer]:
    srv = TTSServer(audio)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stopping.set()
        srv.gate.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)
        assert not thread.is_alive()


@pytest.fixture
def engine(server: TTSServer) -> Iterator[Callable[..., OpenAISpeechEngine]]:
    """engine(mode, **options): an engine for the server's mode, closed after the test."""
    made: list[OpenAISpeechEngine] = []

    def make(mode: str, **options: object) -> OpenAISpeechEngine:
        options = {"model": "kokoro", "api_key": KEY, **options}
        made.append(OpenAISpeechEngine(f"{server.url}/{mode}/v1", **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for e in made:
        e.close()


def joined(chunks: list[Speech]) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks])


def speech_requests(server: TTSServer) -> list[dict]:
    return [r for r in server.requests if r["method"] == "POST"]


def test_streams_real_pcm_at_24k_and_sends_the_right_request(server, engine, audio):
    chunks = list(engine("ok").stream(TEXT, Voice()))
    assert len(chunks) > 1
    assert all(c.sample_rate == 24000 and c.samples.dtype == np.int16 and len(c.samples) for c in chunks)
    samples = joined(chunks)
    assert np.array_equal(samples, audio.pcm24)  # nothing lost or shifted by the odd-byte splits
    assert abs(len(samples) / 24000 - audio.espeak.seconds) < 0.02 and 2.0 < len(samples) / 24000 < 8.0
    assert np.abs(samples.astype(np.int32)).max() > 1000
    (request,) = speech_requests(server)
    assert request["path"].endswith("/ok/v1/audio/speech")
    assert request["body"] == {
        "model": "kokoro",
        "input": TEXT,
        "voice": "alloy",
        "response_format": "pcm",
        "speed": 1.0,
    }
    assert request["auth"] == f"Bearer {KEY}"


def test_speed_follows_the_profile_rate(server, engine):
    tts = engine("ok")
    for rate, speed in ((340, 2.0), (85, 0.5), (450, 2.647)):
        list(tts.stream(TEXT, Voice(rate=rate)))
        assert speech_requests(server)[-1]["body"]["speed"] == speed


def test_first_chunk_arrives_before_the_rest_is_sent(server, engine):
    chunks = engine("gated").stream(TEXT, Voice())
    first = next(chunks)  # the server holds back everything after its first piece until the gate opens
    assert first.sample_rate == 24000 and 0 < len(first.samples) <= PIECES[0] // 2
    server.gate.set()
    rest = list(chunks)
    assert rest and server.gate_was_opened == [True]


def test_a_wav_answer_is_read_at_the_header_rate(engine, audio):
    chunks = list(engine("wav").stream(TEXT, Voice()))
    assert {c.sample_rate for c in chunks} == {audio.espeak.sample_rate}
    assert np.array_equal(joined(chunks), audio.espeak.samples)


def test_voices_come_from_the_server_once_and_pick_the_request_voice(server, engine):
    tts = engine("kokoro", voice="bf_emma")
    assert tts.voices() == KOKORO_VOICES and tts.default_voice == "bf_emma"
    list(tts.stream(TEXT, Voice(engine_voice="am_adam")))  # a voice this server knows: used
    list(tts.stream(TEXT, Voice(engine_voice="en-us")))  # an espeak voice: the configured one instead
    assert [r["body"]["voice"] for r in speech_requests(server)] == ["am_adam", "bf_emma"]
    assert sum(r["method"] == "GET" for r in server.requests) == 1


def test_voices_fall_back_to_openais_list(server, engine):
    assert engine("ok").voices() == list(OPENAI_VOICES)
    assert engine("ok", voice="af_sky").voices() == [*OPENAI_VOICES, "af_sky"]
    assert engine("ok").default_voice == "alloy"
    list(engine("ok").stream(TEXT, Voice(engine_voice="nova")))
    assert speech_requests(server)[-1]["body"]["voice"] == "nova"


@pytest.mark.parametrize(
    ("mode", "options", "expected"),
    [
        ("unauthorized", {}, r"HTTP 401 .* the API key was rejected .*--tts-api-key / ONLOOKER_TTS_API_KEY"),
        ("unauthorized", {"api_key": None}, r"HTTP 401 .* needs an API key.*set --tts-api-key"),
        ("nowhere", {}, r"HTTP 404 .*/nowhere/v1/audio/speech: not found .*should end in /v1 .*offer /audio/speech"),
        ("broken", {}, r"HTTP 500 .*: CUDA out of memory\. Traceback .* try again"),
        ("invalid", {}, r"HTTP 422 .*: voice: Voice 'zz' not found \(model 'kokoro', voice 'alloy'\)$"),
        ("chatty", {}, r"HTTP 503 .*: (Service Unavailable ){9}"),
        ("empty", {}, r"sent no audio \(an empty reply\) .*model 'kokoro' and the voice 'alloy'"),
        ("mp3", {}, r"sent audio/mpeg although raw pcm was asked for"),
        ("slow", {"timeout": 0.5}, r"^the speech server at http://127\.0\.0\.1:\d+/slow/v1 sent nothing for 0\.5 s"),
    ],
)
def test_failures_are_one_clear_line_without_the_key(engine, mode, options, expected):
    with pytest.raises(OnlookerError) as caught:
        list(engine(mode, **options).stream(TEXT, Voice()))
    message = str(caught.value)
    assert re.search(expected, message), message
    assert KEY not in message and "\n" not in message and len(message) < 500


def test_a_long_server_message_is_cut_to_200_characters():
    said = server_message(("word " * 100).encode())
    assert len(said) == 200 and said.endswith("…")
    assert server_message(b'{"detail": {"error": "validation_error", "message": "Bad voice"}}') == "Bad voice"
    assert server_message(b"<plain>\n text </plain>") == "<plain> text </plain>"


def test_nothing_listening_is_cannot_reach():
    with socket.socket() as bound:  # bound but not listening: every connect is refused
        bound.bind(("127.0.0.1", 0))
        tts = OpenAISpeechEngine(f"http://127.0.0.1:{bound.getsockname()[1]}/v1", api_key=KEY)
        with pytest.raises(OnlookerError, match=r"^cannot reach the speech server at .*: connection refused") as caught:
            list(tts.stream(TEXT, Voice()))
        tts.close()
    assert KEY not in str(caught.value)
    assert tts.voices() == list(OPENAI_VOICES)


def test_an_unknown_host_is_cannot_reach():
    tts = OpenAISpeechEngine("http://no-such-host.invalid/v1")
    with pytest.raises(OnlookerError, match=r"cannot reach .*'no-such-host\.invalid' does not resolve; check --tts"):
        list(tts.stream(TEXT, Voice()))
    tts.close()


def test_a_connect_timeout_says_so():
    with socket.socket() as full:  # a listener whose accept queue is full drops new connections: no answer
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(full.getsockname())
            tts = OpenAISpeechEngine(f"http://{full.getsockname()[0]}:{full.getsockname()[1]}/v1", connect_timeout=0.2)
            with pytest.raises(OnlookerError, match=r"^cannot reach the speech server at .*: no answer within 0\.2 s"):
                list(tts.stream(TEXT, Voice()))
            tts.close()
        finally:
            for filler in fillers:
                filler.close()


def test_settings_and_url_checks():
    tts = OpenAISpeechEngine.from_settings(
        load_settings(tts_url="http://localhost:8880/v1/", tts_model="kokoro", tts_voice="af_bella", tts_api_key=KEY)
    )
    assert (tts.speech_url, tts.model, tts.default_voice, tts.api_key) == (
        "http://localhost:8880/v1/audio/speech",
        "kokoro",
        "af_bella",
        KEY,
    )
    tts.close()
    with pytest.raises(ConfigError, match="needs --tts-url"):
        OpenAISpeechEngine.from_settings(load_settings())
    with pytest.raises(ConfigError, match="must be an http:// or https:// URL"):
        OpenAISpeechEngine("localhost:8880/v1")
    pasted = OpenAISpeechEngine("http://h/v1/audio/speech")  # the whole endpoint: the API root is kept
    assert pasted.speech_url == "http://h/v1/audio/speech"
    assert list(pasted.stream("  ", Voice())) == []  # nothing to say: no request at all
    pasted.close()
