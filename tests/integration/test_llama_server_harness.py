"""Proves the real-engine harness (``tests/helpers/llama_server.py`` + ``tests/helpers/gguf_models.py``) on raw HTTP.

What llama-cpp-python 0.3.36's server did with the tiny Qwen2-VL (``--chat_format qwen2.5-vl``):

* Streaming (``stream: true``): SSE ``data: {...}`` chunks -- first a ``{"role": "assistant"}`` delta, then
  ``{"content": ...}`` deltas (the first one may be ``""``), then an empty delta with ``finish_reason``, then
  ``data: [DONE]``. No chunk carries ``usage``, even with ``stream_options: {"include_usage": true}`` (ignored).
* ``usage.prompt_tokens`` (non-streaming) counts M-RoPE *positions*, not tokens: an image adds
  ``max(grid_w, grid_h) + 2`` (``<|vision_start|>``/``<|vision_end|>``) where grid = pixels / 28 after resizing
  to multiples of 28, not ``grid_w * grid_h`` (the embeddings it really feeds). 112x112: +6 (16 embeddings);
  448x448: +18 (256 embeddings); 640x360: +25. mtmd resizes to between 8 and 4096 merged tokens.
* The tiny model never emits EOS (see ``gguf_models.restrict_output_to_ascii``): every completion ends with
  ``finish_reason: "length"`` at ``max_tokens`` (~600 tokens/s on one thread), text is printable ASCII.
* Without ``--clip_model_path`` (no mmproj; ``chat_format`` left to the GGUF's template) an ``image_url`` part
  is **silently ignored**: HTTP 200, no error, no warning in the log. The GGUF's Qwen2-VL template renders the
  part as the text ``<|vision_start|><|image_pad|><|vision_end|>`` (3 tokens, whatever the picture), and the
  completion is the same as for any other image. A backend must probe for vision itself (e.g. send the same
  prompt with two different images and compare ``prompt_tokens`` / output) rather than expect an error.
* ``kill()`` mid-stream: the client's ``iter_lines`` ends with ``httpx.RemoteProtocolError`` (incomplete
  chunked read) and no ``[DONE]``; ``restart()`` on the same port answers again in about a second.

Timings on the 2-core dev machine: server start to ``/v1/models`` ~0.8 s, an image request ~0.05 s; this
module ~5 s once the GGUF files are cached (the first build adds ~15 s).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.helpers.llama_server import LlamaServer, missing_engine_reason

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(missing_engine_reason() is not None, reason=missing_engine_reason() or ""),
]

TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture(scope="module")
def gguf() -> tuple:
    from tests.helpers.gguf_models import tiny_gguf_qwen2vl

    return tiny_gguf_qwen2vl()


def jpeg_data_url(size: tuple[int, int], color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_body(image_url: str | None = None, *, stream: bool = False, max_tokens: int = 8) -> dict:
    content: list[dict] = [{"type": "text", "text": "What is happening?"}]
    if image_url is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image_url}})
    return {
        "messages": [{"role": "system", "content": "You comment on live video."}, {"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }


def sse_events(response: httpx.Response) -> Iterator[dict | str]:
    """The decoded ``data:`` payloads of an SSE response (``"[DONE]"`` as the string)."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            yield payload if payload == "[DONE]" else json.loads(payload)


def complete(server: LlamaServer, body: dict) -> dict:
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def test_streams_deltas_and_counts_the_image(gguf):
    model, mmproj = gguf
    with LlamaServer(model, mmproj) as server:
        models = httpx.get(f"{server.base_url}/models", timeout=TIMEOUT).json()
        assert [m["id"] for m in models["data"]] == [server.model_id]

        image = jpeg_data_url((448, 448))
        body = chat_body(image, stream=True) | {"stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=TIMEOUT) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = list(sse_events(response))
        assert events[-1] == "[DONE]"
        chunks = [e for e in events if isinstance(e, dict)]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) >= 2
        assert text.strip() and text.isascii()
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert not any(c.get("usage") for c in chunks)  # include_usage is ignored by this server

        with_image = complete(server, chat_body(image))["usage"]["prompt_tokens"]
        without = complete(server, chat_body())["usage"]["prompt_tokens"]
        # 448 px = 16 patches of 28 a side: +16 positions for the image, +2 for the vision start/end markers.
        assert with_image - without == 18
        small = complete(server, chat_body(jpeg_data_url((112, 112))))["usage"]["prompt_tokens"]
        assert small - without == 6


def test_without_mmproj_an_image_is_silently_ignored(gguf):
    model, _ = gguf
    with LlamaServer(model) as server:
        assert "--clip_model_path" not in server.command()
        text_only = complete(server, chat_body())
        red = complete(server, chat_body(jpeg_data_url((448, 448))))
        blue = complete(server, chat_body(jpeg_data_url((112, 112), (20, 40, 220))))
    # 200 OK, no error: the template writes 3 placeholder tokens whatever the image, and the model never sees it.
    assert red["usage"]["prompt_tokens"] == blue["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + 3
    assert red["choices"][0]["message"]["content"] == blue["choices"][0]["message"]["content"]


def test_killed_mid_stream_then_restarted_on_the_same_port(gguf):
    model, mmproj = gguf
    with LlamaServer(model, mmproj) as server:
        port = server.port
        received, done = 0, False
        body = chat_body(jpeg_data_url((112, 112)), stream=True, max_tokens=1500)
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=TIMEOUT) as response,
        ):
            for event in sse_events(response):
                done = event == "[DONE]"
                received += 1
                if received == 3:
                    server.kill()
        assert not done and received >= 3
        assert not server.running and server.process is not None and server.process.returncode == -9
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/models", timeout=TIMEOUT)

        server.restart()
        assert server.port == port and server.running
        reply = complete(server, chat_body(jpeg_data_url((112, 112))))
        assert reply["choices"][0]["finish_reason"] == "length"
    assert server.process is not None and server.process.poll() is not None  # reaped on exit
