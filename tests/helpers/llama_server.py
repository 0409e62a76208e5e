"""A real OpenAI-compatible engine for tests: ``llama-cpp-python[server]`` on loopback, owned by the test.

``LlamaServer`` starts ``python -m llama_cpp.server`` as a subprocess on ``127.0.0.1`` and a free port, waits
until ``GET /v1/models`` answers (polling every 0.1 s up to ``startup_timeout``), and stops it (SIGTERM, then
SIGKILL after 5 s) and reaps it in ``__exit__`` -- also when the start failed, with the server's log tail in
the ``RuntimeError``. ``kill()`` SIGKILLs it (a server dying mid-stream) and ``restart()`` brings it back on the
same port (recovery tests). With ``mmproj=None`` it is the text-only variant ("started without the projector").
``missing_engine_reason()`` says whether the wheel, its server extras and the
vendored converter are there (use the reason in ``pytest.mark.skipif``).

Engine: llama-cpp-python 0.3.36 (the newest on PyPI in this work; its vendored llama.cpp serves Qwen2-VL through
``libmtmd``), compiled by ``scripts/build_llama_server.sh`` into a wheel cached in
``${ONLOOKER_WHEEL_CACHE:-~/.cache/onlooker/wheels}`` with
``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF"``:
369 s on the 2-core dev machine (pip's isolated build, Ninja -j2), a 23.7 MB ``py3-none-linux_x86_64`` wheel;
re-runs with the wheel there take ~0.1 s. ``GGML_NATIVE=OFF`` means no ``-march=native``, but ggml then turns
on SSE4.2/AVX/AVX2/BMI2/FMA/F16C by default for its CPU backend: the cached wheel needs an AVX2 (Haswell+) CPU.

The command line that works (``LlamaServer.command()``)::

    python -m llama_cpp.server --model model.gguf --clip_model_path mmproj.gguf --chat_format qwen2.5-vl \\
        --host 127.0.0.1 --port PORT --n_ctx 2048 --n_threads 1 --n_threads_batch 1 --n_batch 512 --verbose False

* ``--chat_format qwen2.5-vl`` picks ``Qwen25VLChatHandler`` (libmtmd, its own built-in ChatML template; right
  for Qwen2-VL and Qwen2.5-VL). ``--chat_format mtmd`` (the generic ``MTMDChatHandler``, which renders the GGUF's
  ``tokenizer.chat_template``) works with these files too (1 more prompt token: its template ends differently).
  The projector is loaded lazily, on the first chat request, not at start-up.
* Without ``--clip_model_path`` no ``--chat_format`` is passed: the server formats with the GGUF's own template
  and an image part is silently dropped (details in ``tests/integration/test_llama_server_harness.py``).
* One thread: with ``--n_threads 2`` on 2 cores, ggml's OpenMP threads spin-wait against the test process and
  the other servers, and a 1500-token completion took 3 s to 46 s; with 1 thread it takes 2.4 s (~600 tokens/s)
  even with another test run busy on the machine.
* ``/v1/models`` lists one model whose ``id`` is the ``--model`` path (``LlamaServer.model_id``); a request's
  ``model`` field is not checked and is echoed back in the response.
* The child gets the parent's environment minus ``HOST``, ``PORT``, ``CONFIG_FILE``, ``MODEL`` and a few more:
  the server's ``__main__`` reads ``HOST``/``PORT`` over the command line, and its pydantic settings read the rest.
* SIGTERM mid-stream stops it in ~0.5 s (uvicorn cuts the stream: the client gets ``RemoteProtocolError``).

Timings on the 2-core dev machine: start to ``/v1/models`` answering 0.7-0.9 s (model load included; first
image request adds the projector load, ~0.05 s), restart on the same port ~0.7 s.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from tests.helpers.gguf_models import missing_converter_reason

STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 5.0
# Settings the server reads from the environment that would silently change what a test starts.
_SCRUBBED_ENV = ("HOST", "PORT", "CONFIG_FILE", "MODEL", "CHAT_FORMAT", "CLIP_MODEL_PATH", "N_CTX", "N_GPU_LAYERS")


def missing_engine_reason() -> str | None:
    """Why ``llama_cpp.server`` cannot run here (for ``pytest.skip``), or None when it can."""
    missing = [
        name
        for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        return (
            f"llama-cpp-python[server] is not installed (missing: {', '.join(missing)}); "
            "run scripts/build_llama_server.sh (or scripts/setup.sh --dev)"
        )
    if importlib.util.find_spec("llama_cpp.mtmd_cpp") is None:
        return "the installed llama-cpp-python has no libmtmd bindings (llama_cpp.mtmd_cpp); rebuild the wheel"
    return missing_converter_reason()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, started in ``__enter__`` and stopped in ``__exit__``.

    ``mmproj`` enables images (``--clip_model_path``; ``chat_format`` then defaults to ``qwen2.5-vl``); without
    it the server is text-only and, unless ``chat_format`` is given, uses the GGUF's chat template.
    ``extra_args`` are appended as is (e.g. ``["--seed", "1"]``). ``startup_seconds`` is the last start's time.
    """

    def __init__(
        self,
        model: Path,
        mmproj: Path | None = None,
        *,
        chat_format: str | None = None,
        n_ctx: int = 2048,
        n_threads: int = 1,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.model = Path(model)
        self.mmproj = Path(mmproj) if mmproj is not None else None
        self.chat_format = chat_format or ("qwen2.5-vl" if mmproj is not None else None)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None  # how long the last start took, until /v1/models answered
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"{self.root_url}/v1"

    @property
    def model_id(self) -> str:
        """The model name the server reports in ``/v1/models`` (the ``--model`` path as given)."""
        return str(self.model)

    def command(self) -> list[str]:
        """The server's command line."""
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model)]
        if self.mmproj is not None:
            cmd += ["--clip_model_path", str(self.mmproj)]
        if self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        cmd += ["--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        cmd += ["--n_batch", "512", "--verbose", "False"]
        return cmd + self.extra_args

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> LlamaServer:
        """Start the server and wait until it answers; raises ``RuntimeError`` (log tail included) if not."""
        if self.running:
            raise RuntimeError("the server is already running")
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        self._log.write(f"\n=== start: {' '.join(self.command())}\n".encode())
        self._log.flush()
        started = time.monotonic()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a Ctrl-C in pytest does not hit it first
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        last_error = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"llama_cpp.server exited with {self.process.returncode} while starting:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        return
                    last_error = "GET /v1/models answered non-200"
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        raise RuntimeError(
            f"llama_cpp.server did not answer on {self.base_url} within {self.startup_timeout:.0f} s"
            f" ({last_error}):\n{self.log_tail()}"
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the process. A no-op when not running."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        else:
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server now (no graceful shutdown: open streams are cut) and reap it."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def restart(self) -> LlamaServer:
        """Stop (if still running) and start again on the same port and with the same arguments."""
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 4000) -> str:
        """The last ``chars`` characters of the server's stdout+stderr (all starts so far)."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-chars:]

    def close(self) -> None:
        """Stop the server and remove its log file."""
        try:
            self.stop()
        finally:
            self._log.close()
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LlamaServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LlamaServer({self.base_url}, {'mmproj' if self.mmproj else 'text-only'}, {state})"
