"""The MiniCPM backend against MiniCPM-o 4.5's REAL code, on CPU, with tiny random weights.

The model folders are built by ``tests/helpers/minicpm_o45.py`` from the published, unmodified remote code
(which copy ran is printed in the pytest header). Nothing of the model is replaced except the vocoder
(Step-Audio's Token2wav, whose weights are not available here: ``tests/helpers/token2wav_double.py``, used only
where a test says so). Random weights speak garbage: these tests assert structure, counts, shapes and
behaviour, never wording.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.backends.base import CommentRequest
from pipeline.backends.minicpm import THREAD_NAME, TURN_TOKENS, MiniCPM
from pipeline.backends.minicpm_text import kv_length, parse_chunk
from pipeline.backends.remote_code import imports_switched_off
from pipeline.errors import BackendError
from pipeline.events import CommentaryFinished, ErrorEvent, RuleCheck
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.speech.engines import Speech
from pipeline.speech.transcribe import find_transcriber
from tests.helpers.media import Segment, write_video
from tests.helpers.minicpm_o45 import CODE_FILES, build_tiny_model, find_code
from tests.helpers.session_run import one_camera, play, watch_desk
from tests.helpers.token2wav_double import Token2wavDouble, install

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a sports commentator."
USER = "Comment on what is happening now."


@pytest.fixture(scope="session")
def o45(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``o45(kind)``: a tiny real MiniCPM-o 4.5 folder (``vision``, ``audio`` or ``omni``), built once."""
    built: dict[str, Path] = {}

    def folder(kind: str) -> Path:
        if kind not in built:
            built[kind] = build_tiny_model(tmp_path_factory.mktemp(f"o45-{kind}") / f"o45-{kind}", kind)
        return built[kind]

    return folder


@pytest.fixture
def vocoder(monkeypatch: pytest.MonkeyPatch) -> type[Token2wavDouble]:
    """The Token2wav test double as ``stepaudio2``: everything before the vocoder is the model's."""
    monkeypatch.delitem(sys.modules, "stepaudio2", raising=False)
    install()
    monkeypatch.setattr(Token2wavDouble, "instances", [])
    yield Token2wavDouble
    sys.modules.pop("stepaudio2", None)


@pytest.fixture
def backend(o45) -> Iterator[Callable[..., MiniCPM]]:
    """``backend(kind, **kwargs)``: the real backend on a tiny real model; closed and its workers joined after."""
    made: list[MiniCPM] = []

    def make(kind: str, **kwargs: Any) -> MiniCPM:
        kwargs.setdefault("token_timeout", 30.0)
        made.append(MiniCPM(model=str(o45(kind)), device="cpu", **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.close()
    for thread in threading.enumerate():
        if thread.name == THREAD_NAME:
            thread.join(timeout=30)
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]


FRAMES = [
    Frame(np.random.default_rng(i).integers(0, 255, (90, 120, 3), dtype=np.uint8), 0.5 * i, 0.0, i, "t")
    for i in range(16)
]


def request(
    indices: range | list[int] = range(3),
    trigger: str = "active",
    stream_id: str = "s1",
    max_tokens: int = 20,
    user: str = USER,
    **kwargs: Any,
) -> CommentRequest:
    return CommentRequest(
        frames=[FRAMES[i] for i in indices],
        prompt=PromptParts(SYSTEM, user),
        max_tokens=max_tokens,
        temperature=0.0,
        trigger=trigger,
        stream_id=stream_id,
        **kwargs,
    )


def comment(b: MiniCPM, req: CommentRequest) -> str:
    return "".join(b.stream(req))


def spy(model: Any, method: str) -> list[dict[str, Any]]:
    """Record the keyword arguments of every call of ``model.method`` (an instance attribute wrapping it)."""
    calls: list[dict[str, Any]] = []
    real = getattr(model, method)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    setattr(model, method, recorded)
    return calls


def vision_calls(model: Any) -> list[int]:
    """One entry per forward of the real vision tower (its batch size)."""
    calls: list[int] = []
    model.vpm.register_forward_hook(lambda _m, args, _out: calls.append(int(args[0].shape[0])))
    return calls


# --- the code that runs ---


def test_the_model_folder_holds_the_published_code_unmodified(o45):
    code = find_code()
    for name in CODE_FILES:
        assert filecmp.cmp(code.folder / name, o45("vision") / name, shallow=False), name


def test_only_imports_the_environment_switches_off_are_left_out_of_the_import_check():
    source = (find_code().folder / "modeling_minicpmo.py").read_text()
    assert imports_switched_off(source, {}) == {"flag_gems"}
    assert imports_switched_off(source, {"USE_FLAGOS": "1"}) == set()
    guarded = "import os\nimport json\nif os.environ.get('X') == '1':\n    import json\n    import only_with_x\n"
    assert imports_switched_off(guarded, {}) == {"only_with_x"}  # json is imported elsewhere too
    assert imports_switched_off("import sys\nif sys.platform == 'x':\n    import nothere\n", {}) == set()


# --- end to end, as a user runs it ---


@pytest.mark.parametrize("flags", [["--vision-only"], []], ids=["vision-only", "omni"])
def test_headless_cli_comments_on_a_real_video(o45, tmp_path, flags):
    """`python app.py --headless --backend minicpm --model DIR --device cpu` prints comments, no error."""
    clip = write_video(tmp_path / "clip.mp4", [Segment(2.0, 0, moving=True), Segment(2.0, 1, moving=True)])
    events = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}
    args = ["--headless", "--backend", "minicpm", "--model", str(o45("omni")), "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args, "--source", str(clip), "--events", str(events), *flags],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert not [r for r in records if r["type"] == "error"], done.stderr
    spoken = [r for r in records if r["type"] == "commentary_end" and r["text"].strip()]
    assert len(spoken) >= 2
    assert all(r["text"].strip()[:20] in done.stdout for r in spoken)
    assert "incremental prefill" in done.stderr and "Traceback" not in done.stderr
    if not flags:  # the vocoder package is not installed here: text goes on, the fallback speaks, and it says why
        assert 'pip install "minicpmo-utils[all]' in done.stderr


# --- vision only ---


def test_vision_only_comments_with_the_system_prompt_opening_the_first_user_turn(backend):
    b = backend("vision", vision_only=True)
    prefills = spy(b._model, "streaming_prefill")
    assert not hasattr(b._model, "apm") and "no voice" in b.description
    assert comment(b, request(range(3))).strip()
    first = prefills[0]["msgs"][0]
    assert first["role"] == "user" and first["content"][0].startswith(SYSTEM)
    assert [p["msgs"][0]["role"] for p in prefills] == ["user"] * 5  # system text, 3 frames, prompt
    assert comment(b, request(range(1, 4))).strip()  # and the next one goes on in the same session


def test_with_the_audio_encoder_the_system_prompt_is_a_system_turn(backend):
    b = backend("audio")
    prefills = spy(b._model, "streaming_prefill")
    assert comment(b, request(range(2))).strip()
    assert prefills[0]["msgs"][0] == {"role": "system", "content": [SYSTEM]}


# --- incremental prefill, measured on the real cache ---


def test_each_frame_goes_through_the_vision_tower_once_across_overlapping_windows(backend):
    b = backend("vision", vision_only=True)
    tower = vision_calls(b._model)
    for start in range(4):
        assert comment(b, request(range(start, start + 3))).strip()
    assert sum(tower) == 6 and b.ledger.prefilled == 6 and b.ledger.resets == 1


def test_the_ledgers_estimate_matches_the_real_kv_cache(backend):
    b = backend("audio")
    for start in range(4):
        comment(b, request(range(start, start + 3)))
        after_prefill = b.ledger.tokens
        assert abs(b.ledger.expected - after_prefill) <= TURN_TOKENS  # planned before, measured after
        assert kv_length(b._model) > after_prefill  # the reply went in on top
    assert b.ledger.frame_tokens == pytest.approx(66, abs=TURN_TOKENS + 2)  # 64 queries + <image></image>


def test_a_scene_cut_empties_the_cache_and_starts_over_with_the_cut_frames(backend):
    b = backend("vision", vision_only=True)
    comment(b, request([0], trigger="start"))
    fresh = b.ledger.tokens
    for start in range(1, 4):
        comment(b, request(range(start, start + 3)))
    assert b.ledger.tokens > 3 * fresh
    tower = vision_calls(b._model)
    comment(b, request([5], trigger="scene_cut"))
    assert b.ledger.tokens == fresh and sum(tower) == 1 and b.ledger.resets == 2


def test_another_sessions_turn_starts_the_model_session_over(backend):
    b = backend("vision", vision_only=True)
    comment(b, request(range(3), stream_id="a"))
    alone = b.ledger.tokens
    comment(b, request(range(3), stream_id="b"))
    assert b.ledger.tokens == alone and b.ledger.owner == "b"
    tower = vision_calls(b._model)
    comment(b, request(range(1, 4), stream_id="a"))
    assert sum(tower) == 3 and b.ledger.resets == 3  # a's whole window again: b's turn replaced its cache


def test_the_context_budget_starts_the_session_over_before_it_is_passed(backend):
    b = backend("vision", vision_only=True)
    b.ledger.budget = 500
    lengths = []
    for start in range(6):
        comment(b, request(range(start, start + 2), max_tokens=20))
        lengths.append(b.ledger.tokens)
    assert b.ledger.resets >= 2
    assert max(lengths) <= 500 and min(lengths[1:]) < max(lengths)  # it really shrank


def test_two_sessions_taking_turns_from_two_threads_never_overlap(backend):
    b = backend("vision", vision_only=True)
    inside, overlapped = threading.Event(), threading.Event()
    real = b._model.streaming_prefill

    def exclusive(*args: Any, **kwargs: Any) -> Any:
        if inside.is_set():
            overlapped.set()
        inside.set()
        try:
            return real(*args, **kwargs)
        finally:
            inside.clear()

    b._model.streaming_prefill = exclusive
    texts: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def run(stream_id: str) -> None:
        try:
            for start in range(3):
                texts[stream_id].append(comment(b, request(range(start, start + 2), stream_id=stream_id)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(sid,)) for sid in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not overlapped.is_set()
    assert all(len(replies) == 3 and all(r.strip() for r in replies) for replies in texts.values())


# --- decoding ---


def test_the_raw_chunk_shapes_are_the_ones_the_adapter_parses(backend, vocoder):
    b = backend("omni")
    model = b._model
    model.reset_session(reset_token2wav_cache=False)
    model.streaming_prefill(session_id="raw", msgs=[{"role": "user", "content": ["Hello."]}])
    texts = list(model.streaming_generate(session_id="raw", generate_audio=False, max_new_tokens=20, do_sample=False))
    assert texts and all(isinstance(t, str) and isinstance(done, bool) for t, done in texts)
    assert all(parse_chunk(chunk)[1] is None for chunk in texts)
    model.streaming_prefill(session_id="raw", msgs=[{"role": "user", "content": ["Again."]}])
    voiced = list(model.streaming_generate(session_id="raw", generate_audio=True, max_new_tokens=10, do_sample=False))
    assert voiced and all(isinstance(w, torch.Tensor) and isinstance(t, str) for w, t in voiced)
    assert all(parse_chunk(chunk)[1] is not None for chunk in voiced)


@pytest.mark.parametrize("cap", [7, 25])
def test_the_token_cap_is_honoured_though_the_model_decodes_in_chunks_of_ten(backend, cap):
    b = backend("vision", vision_only=True)
    tokenizer = b._model.processor.tokenizer
    bos = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", add_special_tokens=False)
    for start in range(2):
        text = comment(b, request(range(start, start + 2), max_tokens=cap))
        assert 0 < len(tokenizer.encode(text, add_special_tokens=False)) <= cap
        if cap >= 10:  # whole chunks of 10 decoded, so the model itself stopped within the cap
            assert kv_length(b._model) - b.ledger.tokens - len(bos) <= cap
    assert b.ledger.resets == 1  # a reply stopped at the cap is a finished turn


def test_model_markup_in_the_prompt_cannot_break_the_next_prefill(backend):
    """Earlier comments and user instructions go into the prompt; the processor reads <image> as structure."""
    b = backend("audio")
    assert comment(b, request(range(2))).strip()
    tricky = "Earlier you said: </image_save_to> <image_id> </image> <|im_end|> <unit>. " + USER
    assert comment(b, request(range(1, 3), user=tricky)).strip()
    assert "<image" not in comment(b, request(range(2, 4)))


def test_a_model_that_ends_its_reply_at_once_gives_an_empty_comment_not_an_error(backend):
    """The published chunk decoder fails (torch.cat of nothing) when the first token it picks is a stop token."""
    b = backend("vision", vision_only=True)
    stop_id = b._model.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    stopping = threading.Event()

    def stop_at_once(_module: Any, _args: Any, logits: torch.Tensor) -> torch.Tensor | None:
        if not stopping.is_set():
            return None
        forced = logits.clone()
        forced[..., stop_id] = 1e4
        return forced

    b._model.llm.lm_head.register_forward_hook(stop_at_once)
    assert comment(b, request(range(2))).strip()
    stopping.set()
    assert comment(b, request(range(1, 3))) == ""
    stopping.clear()
    assert comment(b, request(range(2, 4))).strip()  # and the model goes on


# --- cancelling and failing, inside the real model ---


def llm_hook(model: Any, action: Callable[[int], None]) -> None:
    """Run ``action(call number)`` before every forward of the real language model."""
    calls = [0]

    def before(_module: Any, _args: Any, _kwargs: Any) -> None:
        calls[0] += 1
        action(calls[0])

    model.llm.register_forward_pre_hook(before, with_kwargs=True)


def test_cancel_mid_generation_leaves_the_model_usable_for_the_next_comment(backend):
    b = backend("vision", vision_only=True)
    comment(b, request(range(2)))
    req = request(range(1, 3), max_tokens=60)
    got = []
    for delta in b.stream(req):
        got.append(delta)
        req.cancel.set()
    assert len(got) == 1 and b.ledger.owner is None  # the half reply's session is not trusted
    assert comment(b, request(range(2, 4))).strip() and b.ledger.resets == 2


def test_a_failure_inside_the_model_is_a_backend_error_and_the_next_comment_works(backend):
    b = backend("vision", vision_only=True)
    failing = threading.Event()

    def maybe_fail(_call: int) -> None:
        if failing.is_set():
            failing.clear()
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    llm_hook(b._model, maybe_fail)
    failing.set()
    with pytest.raises(BackendError, match="illegal memory access"):
        comment(b, request(range(2)))
    assert comment(b, request(range(2))).strip() and b.ledger.resets >= 1


def test_a_stalled_model_times_out_and_recovers(backend):
    b = backend("vision", vision_only=True, token_timeout=1.0)
    release, stall = threading.Event(), threading.Event()

    def maybe_stall(_call: int) -> None:
        if stall.is_set():
            stall.clear()
            release.wait(timeout=30)  # a stuck kernel; the timeout only guards the test run

    llm_hook(b._model, maybe_stall)
    comment(b, request(range(2)))
    stall.set()
    req = request(range(1, 3))
    stream = b.stream(req)
    with pytest.raises(BackendError, match="produced no token"):
        next(stream)
    release.set()
    stream.close()
    assert comment(b, request(range(2, 4))).strip()


# --- the model's own voice (vocoder double) ---


def test_the_models_voice_streams_audio_from_the_real_tts(backend, vocoder):
    b = backend("omni")
    assert not b.voice_error and "own voice" in b.description and b.capabilities.audio_out
    [vocoder_double] = vocoder.instances
    assert vocoder_double.prompts  # the checkpoint's own reference voice (assets/HT_ref_audio.wav)
    heard: list[Speech] = []
    for start in range(2):
        text = comment(b, request(range(start, start + 2), max_tokens=20, on_audio=heard.append))
        assert text.strip()
    assert heard and all(s.sample_rate == 24_000 and s.samples.dtype == np.int16 for s in heard)
    assert sum(len(t) for t in vocoder_double.tokens) > 0  # audio tokens from the real MiniCPMTTS


def test_a_profiles_voice_clip_becomes_the_reference(backend, vocoder, tmp_path):
    import soundfile

    clip = tmp_path / "voice.wav"
    soundfile.write(str(clip), np.zeros(24_000, np.float32), 48_000)
    b = backend("omni")
    [vocoder_double] = vocoder.instances
    comment(b, request(range(2), on_audio=lambda _s: None, reference_audio=str(clip)))
    assert len(vocoder_double.prompts) == 2 and b._voice_ref == str(clip)


def test_without_the_vocoder_package_text_goes_on_and_says_what_to_install(backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "stepaudio2", None)  # import fails, as where minicpmo-utils is absent
    b = backend("omni")
    assert 'pip install "minicpmo-utils[all]' in b.voice_error and not b.capabilities.audio_out
    assert comment(b, request(range(2))).strip()


def test_a_checkpoint_without_its_tts_module_has_no_voice_but_comments(backend):
    b = backend("audio")
    assert "no speech module" in b.voice_error and comment(b, request(range(2))).strip()


# --- speech recognition with the real audio encoder ---


def test_spoken_instructions_go_through_the_real_audio_encoder(backend):
    b = backend("audio")
    encoder = []
    b._model.apm.register_forward_hook(lambda *_: encoder.append(1))
    comment(b, request(range(2)))
    transcriber, why = find_transcriber(None, b)
    assert transcriber is not None and not why
    speech = (0.1 * np.sin(2 * np.pi * 200 * np.arange(16_000) / 16_000)).astype(np.float32)
    assert isinstance(b.transcribe(16_000, speech), str) and encoder
    assert b.ledger.owner is None  # the chat turn may have disturbed the streaming session
    assert comment(b, request(range(1, 3))).strip()


def test_vision_only_has_no_speech_recognition(backend):
    assert not hasattr(backend("vision", vision_only=True), "transcribe")


# --- the baseline: --no-incremental-prefill ---


def test_without_incremental_prefill_each_comment_is_a_chat_over_the_whole_window(backend):
    b = backend("audio", incremental=False)
    chats = spy(b._model, "chat")
    tower = vision_calls(b._model)
    for start in range(3):
        assert comment(b, request(range(start, start + 3))).strip()
    assert "chat" in b.description and len(chats) == 3 and sum(tower) == 9
    assert all(c["num_beams"] == 1 and c["stream"] is False for c in chats)
    assert all(c["msgs"][0]["role"] == "system" for c in chats)


def test_vision_only_baseline_restarts_the_streaming_session_for_every_comment(backend):
    b = backend("vision", vision_only=True, incremental=False)
    tower = vision_calls(b._model)
    for start in range(3):
        assert comment(b, request(range(start, start + 3))).strip()
    assert "full prefill" in b.description and b.ledger.resets == 3 and sum(tower) == 9


def test_rule_checks_interleave_with_comments_on_the_real_code(backend, tmp_path):
    """Checks are their own stream (a short JSON question on the newest frames) between the commentary's
    turns; the real model's garbage is no verdict, and its commentary session keeps going."""
    model = backend("vision")
    clip = write_video(tmp_path / "clip.mp4", [Segment(2.0, 0, moving=True), Segment(2.0, 1, moving=True)])
    desk = watch_desk(model, "door=a person is at the door", interval=1.0)
    run = play(one_camera(model, watch=desk), clip, speed=1.0, timeout=180)
    checks = run.of(RuleCheck)
    assert len(checks) >= 2 and {c.answer for c in checks} <= {"yes", "no", "none"}
    assert all(c.reason for c in checks)
    assert not run.of(ErrorEvent)
    assert [c for c in run.of(CommentaryFinished) if c.text.strip()], "commentary went on between the checks"
