"""Any OpenAI-compatible chat-completions server: vLLM, SGLang, llama.cpp, Ollama, TensorRT-LLM.

Frames go as ``image_url`` parts (base64 JPEG, resized to ``image_max_side``), or with ``--send-video``
as one ``video_url`` part (an H.264 MP4 at the capture rate, for vLLM), and text streams back over SSE
with the official ``openai`` client. At start the backend finds the model (the only one
``/v1/models`` lists, unless ``--model`` names it) and probes the server with a one-frame request:
a server that ignores images (llama.cpp's server without ``--mmproj`` drops them silently: the
prompt costs the same with or without the picture) is refused with that reason instead of
commenting blind.

Many cameras share one engine: the scheduler in front of it (``pipeline.scheduler``) runs at most
``max_in_flight`` requests at once (``parallel``) and queues the rest by urgency, each with the
newest frames when its turn comes. A request that fails before its first token (connection refused, 5xx, 429)
is retried with backoff; an engine that is down is reported as transient, so sessions keep going
and recover when it returns. Cancelling closes the HTTP stream.
"""

from __future__ import annotations

import base64
import io
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.backends.worker import stream_generation
from pipeline.errors import BackendError, ConfigError
from pipeline.frames import Frame
from pipeline.jpeg import encode_jpeg
from pipeline.sources.urls import mask_url

if TYPE_CHECKING:
    import openai

    from pipeline.config import Settings

THREAD_NAME = "onlooker-openai-stream"
CONNECT_TIMEOUT = 5.0
PROBE_SIZE = 256  # the probe's picture: a small noisy image, so an image that counts costs tokens
IMAGE_TOKENS_MIN = 8  # a picture that adds fewer prompt tokens than this was not seen
# How a rule check asks for its JSON: OpenAI's json_schema (vLLM, SGLang, llama.cpp's llama-server, Ollama),
# then json_object with a schema (llama-cpp-python's server); a server that refuses both is read strictly.
ANSWER_FORMATS = ("json_schema", "json_object")


class _FormatRefused(BackendError):
    """The server answered 400/422 to a structured-output request: try the next form, or none."""


def response_format(form: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` body for one of ``ANSWER_FORMATS``."""
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
    return {"type": "json_object", "schema": schema}


def encode_frame(image: np.ndarray, max_side: int, quality: int) -> str:
    """An RGB frame as a ``data:image/jpeg;base64,...`` URL, its longest side at most ``max_side``."""
    try:
        jpeg = encode_jpeg(image, quality, max_side)
    except ValueError:
        raise BackendError("could not encode a frame as JPEG") from None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def encode_clip(frames: list[Frame], max_side: int) -> str:
    """The frames as one H.264 MP4 ``data:video/mp4;base64,...`` URL, at the rate they were captured,
    for servers that take a ``video_url`` part (vLLM) and pack frames over time themselves."""
    import av

    height, width = frames[0].image.shape[:2]
    scale = min(max_side / max(height, width), 1.0)
    size = (max(round(width * scale) // 2 * 2, 2), max(round(height * scale) // 2 * 2, 2))  # yuv420p: even sides
    span = frames[-1].media_time - frames[0].media_time
    rate = max(round((len(frames) - 1) / span), 1) if span > 0 else 1
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as clip:
        stream = clip.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for frame in frames:
            image = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                clip.mux(packet)
        for packet in stream.encode():
            clip.mux(packet)
    return "data:video/mp4;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def build_messages(request: CommentRequest, max_side: int, quality: int, video: bool = False) -> list[dict[str, Any]]:
    """System text, then one user turn: the frames (image parts, or one video part), then the prompt."""
    if video and len(request.frames) > 1:
        media = [{"type": "video_url", "video_url": {"url": encode_clip(request.frames, max_side)}}]
    else:
        media = [
            {"type": "image_url", "image_url": {"url": encode_frame(f.image, max_side, quality)}}
            for f in request.frames
        ]
    return [
        {"role": "system", "content": request.prompt.system},
        {"role": "user", "content": [*media, {"type": "text", "text": request.prompt.user}]},
    ]


def describe_error(exc: BaseException, url: str) -> BackendError:
    """An ``openai`` exception as a one-line BackendError; unreachable or overloaded is transient."""
    import openai

    where = mask_url(url)
    if isinstance(exc, openai.APITimeoutError):
        return BackendError(f"the server at {where} did not answer in time", transient=True)
    if isinstance(exc, openai.APIConnectionError):
        return BackendError(f"cannot reach the OpenAI-compatible server at {where}: is it running?", transient=True)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return BackendError(f"the server at {where} refused the API key (--api-key / ONLOOKER_API_KEY)")
    if isinstance(exc, openai.NotFoundError):
        return BackendError(f"the server at {where} has no such model or route: {_message(exc)}")
    if isinstance(exc, openai.RateLimitError):
        return BackendError(f"the server at {where} is overloaded (HTTP 429): {_message(exc)}", transient=True)
    if isinstance(exc, openai.InternalServerError):
        return BackendError(f"the server at {where} failed (HTTP {exc.status_code}): {_message(exc)}", transient=True)
    if isinstance(exc, openai.APIStatusError):
        return BackendError(f"the server at {where} refused the request (HTTP {exc.status_code}): {_message(exc)}")
    return BackendError(f"the server at {where} failed: {type(exc).__name__}: {exc}")


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
        if text:
            return " ".join(str(text).split())[:200]
    return " ".join(str(getattr(exc, "message", exc)).split())[:200]


class OpenAICompatible(Backend):
    """One server shared by every session; the client is thread-safe."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        jpeg_quality: int = 80,
        image_max_side: int = 768,
        first_token_timeout: float = 30.0,
        token_timeout: float = 60.0,
        retries: int = 2,
        max_in_flight: int = 4,
        max_frames: int = 8,
        probe: bool = True,
        send_video: bool = False,
    ) -> None:
        import openai

        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"--base-url / ONLOOKER_BASE_URL: '{base_url}' is not an http(s) URL, e.g. http://localhost:8000/v1"
            )
        self.base_url = base_url.rstrip("/")
        self.jpeg_quality = jpeg_quality
        self.image_max_side = image_max_side
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.retries = retries
        self.max_in_flight = max_in_flight
        self.send_video = send_video
        # openai.Timeout is the HTTP library's own (httpx up to openai 2, httpx2 from openai 3): either works.
        read = max(token_timeout, first_token_timeout)
        timeout = openai.Timeout(connect=CONNECT_TIMEOUT, read=read, write=30, pool=5)
        self._client: openai.OpenAI | None = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0
        )
        self.model = model or self._discover()
        self.capabilities = Capabilities(images=True, video=send_video, max_frames=max_frames)
        self.image_tokens = self._probe() if probe else None
        self._formats = list(ANSWER_FORMATS)  # the structured-output forms this server has not refused yet

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAICompatible:
        if not settings.base_url:
            raise ConfigError("--backend openai needs --base-url (or ONLOOKER_BASE_URL), e.g. http://localhost:8000/v1")
        return cls(
            settings.base_url,
            api_key=settings.api_key,
            model=settings.model,
            jpeg_quality=settings.jpeg_quality,
            image_max_side=settings.image_max_side,
            first_token_timeout=settings.first_token_timeout,
            token_timeout=settings.token_timeout,
            retries=settings.retries,
            max_in_flight=settings.max_in_flight,
            send_video=settings.send_video,
        )

    @property
    def parallel(self) -> int:
        """Requests the engine is given at once (``--max-in-flight``), over every camera and tab."""
        return self.max_in_flight

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            raise BackendError("the OpenAI-compatible backend was closed")
        return self._client

    @property
    def description(self) -> str:
        seen = f", {self.image_tokens} tokens a frame" if self.image_tokens else ""
        return f"openai · {self.model} at {mask_url(self.base_url)}{seen}"

    # --- start-up ---
    def _discover(self) -> str:
        """The model to use when none is named: the only one the server lists."""
        try:
            names = [m.id for m in self.client.models.list()]
        except Exception as exc:
            error = describe_error(exc, self.base_url)
            raise BackendError(str(error)) from None  # at start, unreachable is not worth waiting for
        if len(names) == 1:
            return names[0]
        if not names:
            raise BackendError(f"the server at {mask_url(self.base_url)} lists no models; pass --model NAME")
        raise BackendError(
            f"the server at {mask_url(self.base_url)} serves {len(names)} models; pick one with --model "
            f"({', '.join(names[:10])})"
        )

    def _probe(self) -> int | None:
        """Send one small picture, with and without it: how many prompt tokens a frame costs, or
        a clear error when the server refuses or ignores images. None when the server reports no usage."""
        rng = np.random.default_rng(0)
        picture = rng.integers(0, 255, (PROBE_SIZE, PROBE_SIZE, 3), dtype=np.uint8)
        url = encode_frame(picture, self.image_max_side, self.jpeg_quality)
        question = {"type": "text", "text": "What is in the picture?"}
        with_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, question]}]
        without = [{"role": "user", "content": [question]}]
        try:
            seen = self.client.chat.completions.create(model=self.model, messages=with_image, max_tokens=1)
            blind = self.client.chat.completions.create(model=self.model, messages=without, max_tokens=1)
        except Exception as exc:
            error = describe_error(exc, self.base_url)
            raise BackendError(f"{error} (while checking that '{self.model}' takes images)") from None
        if seen.usage is None or blind.usage is None:
            return None
        extra = seen.usage.prompt_tokens - blind.usage.prompt_tokens
        if extra < IMAGE_TOKENS_MIN:
            raise BackendError(
                f"the server at {mask_url(self.base_url)} ignores images: a picture added {extra} prompt tokens to "
                f"'{self.model}'. Serve a vision model with its projector (llama.cpp: --mmproj FILE; vLLM and "
                "SGLang: a vision-language model) or Onlooker would comment blind"
            )
        return extra

    # --- commentary ---
    def stream(self, request: CommentRequest) -> Iterator[str]:
        """Text deltas over SSE. How many run at once is the scheduler's business (``parallel``)."""
        client = self.client
        if request.cancel.is_set():
            return
        request.timings["model_start"] = time.perf_counter()
        messages = build_messages(request, self.image_max_side, self.jpeg_quality, self.send_video)
        request.timings["encoded"] = time.perf_counter()
        attempt = 0
        while True:
            produced = False
            try:
                for text in self._attempt(client, request, messages):
                    produced = True
                    request.timings.setdefault("model_first_token", time.perf_counter())
                    yield text
                return
            except _FormatRefused:
                if request.cancel.is_set():
                    return
                continue  # the next form (or none), the frames as encoded: a refusal is remembered, not a try
            except BackendError as exc:
                if produced or not exc.transient or attempt == self.retries or request.cancel.is_set():
                    raise
                if request.cancel.wait(min(0.5 * 2**attempt, 4.0) * (0.5 + random.random())):
                    return
                attempt += 1

    def _attempt(self, client: openai.OpenAI, request: CommentRequest, messages: list[dict[str, Any]]) -> Iterator[str]:
        """One streamed request, read in a worker thread so cancellation and timeouts act at once."""
        held: dict[str, Any] = {}
        schema = request.answer_schema
        form = self._formats[0] if schema is not None and self._formats else None
        extra = {"response_format": response_format(form, schema)} if form and schema else {}

        def produce(emit: Callable[[str], None], should_stop: Callable[[], bool]) -> None:
            import openai

            try:
                stream = client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    stop=request.stop or None,
                    **extra,
                )
            except openai.APIStatusError as exc:
                # 400/422, or (llama-cpp-python) a 500 that names the field: the form is refused, not the request
                if form is None or not (exc.status_code in (400, 422) or "response_format" in str(exc)):
                    raise describe_error(exc, self.base_url) from None
                if form in self._formats:
                    self._formats.remove(form)
                raise _FormatRefused(form) from None
            except Exception as exc:
                raise describe_error(exc, self.base_url) from None
            held["stream"] = stream
            try:
                for chunk in stream:
                    if should_stop():
                        return
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            emit(choice.delta.content)
            except Exception as exc:
                if should_stop():
                    return
                error = describe_error(exc, self.base_url)
                raise BackendError(f"{error} (the answer was cut off)", transient=True) from None
            finally:
                stream.close()

        def interrupt() -> None:
            stream = held.get("stream")
            if stream is not None:
                stream.close()

        yield from stream_generation(
            produce,
            lock=threading.Lock(),  # requests run side by side; the scheduler bounds how many
            cancel=request.cancel,
            token_timeout=self.token_timeout,
            first_timeout=self.first_token_timeout,
            what=f"the server at {mask_url(self.base_url)} ({self.model})",
            thread_name=THREAD_NAME,
            interrupt=interrupt,
            transient_timeouts=True,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
