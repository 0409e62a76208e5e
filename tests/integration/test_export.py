"""A recorded session exported as a narrated MP4, from real files: a source video made by the FFmpeg CLI, a
narration written by ``NarrationFile``, subtitles by ``SubtitleFiles``; the MP4 read back with parsers that
are not ours (PyAV for streams, frames and sound; FFmpeg and pysubs2 for the subtitle track)."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import av
import numpy as np
import pysubs2
import pytest

import pipeline.recording.export as export_module
from pipeline.errors import OnlookerError
from pipeline.recording.export import default_export_name, export_session
from pipeline.recording.folder import CameraMeta, SessionMeta, write_meta
from pipeline.recording.narration_file import RATE, NarrationFile
from pipeline.recording.subtitles import Cue, SubtitleFiles

SECONDS, FPS = 6, 15
CUES = [Cue(1.0, 2.0, ("A red ball rolls", "across the floor.")), Cue(4.0, 4.5, ("It stops.",))]
SPOKEN = [(1.0, 2.0), (4.0, 4.5)]  # where the narration has its tone
QUIET = [(0.0, 0.9), (2.1, 3.9), (4.6, 6.0)]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of moving test pattern at 15 fps with B-frames, a key frame every second, and a 300 Hz tone."""
    path = tmp_path_factory.mktemp("source") / "source.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}:duration={SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate=48000:duration={SECONDS}",
        "-c:v", "libx264", "-preset", "veryfast", "-g", str(FPS), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)


def make_session(
    folder: Path,
    source: str,
    *,
    kind: str = "file",
    speaks: bool = True,
    cues: list[Cue] = CUES,
    video: str | list[str] | None = None,
) -> Path:
    """A session folder as the recorder leaves it: subtitles, a narration (when the camera speaks), session.json."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"events": "events.jsonl", "srt": "subtitles.srt", "vtt": "subtitles.vtt"}
    subtitles = SubtitleFiles(folder / files["srt"], folder / files["vtt"])
    for cue in cues:
        subtitles.write(cue)
    subtitles.close()
    if speaks:
        files["narration"] = "narration.ogg"
        narration = NarrationFile(folder / files["narration"])
        for start, end in SPOKEN:
            narration.add(start, tone(end - start))
        narration.fill_to(5.0)  # the last comment came at 5 s: the narration is shorter than the video
        narration.close()
    if video is not None:
        files["video"] = video  # type: ignore[assignment]  # a list of segments is the other form
    camera = CameraMeta(
        id="cam", name="cam", source=source, kind=kind, profile="default", preset="balanced",
        instructions="", backend="opencv", speaks=speaks, files=files,
    )  # fmt: skip
    write_meta(folder, SessionMeta(id=folder.name, started=0.0, ended=6.0, interrupted=False, cameras=[camera]))
    return folder


def streams(path: Path) -> list[tuple[str, str, float]]:
    """(type, codec, duration in seconds) of every stream."""
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name, float(s.duration * s.time_base)) for s in container.streams]


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def audio_track(path: Path, index: int) -> tuple[np.ndarray, int, float]:
    """Track ``index``'s samples (first channel, float), its rate, and the time of its first sample."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[index]
        frames = list(container.decode(stream))
        samples = np.concatenate([f.to_ndarray()[0] for f in frames]).astype(np.float32)
        return samples, stream.rate, float(frames[0].time or 0.0)


def loudness(track: tuple[np.ndarray, int, float], start: float, end: float) -> float:
    samples, rate, first = track
    part = samples[round((start - first) * rate) : round((end - first) * rate)]
    return float(np.sqrt(np.mean(np.square(part)))) if len(part) else 0.0


def subtitle_cues(path: Path, tmp: Path) -> list[tuple[int, int, str]]:
    """The MP4's subtitle track as FFmpeg converts it to SRT and pysubs2 reads it (empty gap samples left out)."""
    ffmpeg("-i", str(path), "-map", "0:s:0", str(tmp / "read-back.srt"))
    return [(e.start, e.end, e.plaintext) for e in pysubs2.load(str(tmp / "read-back.srt")) if e.plaintext.strip()]


def expected_cues() -> list[tuple[int, int, str]]:
    return [(round(c.start * 1000), round(c.end * 1000), "\n".join(c.lines)) for c in CUES]


def changed(burned: list[np.ndarray], original: list[np.ndarray], index: int) -> float:
    """The share of frame ``index``'s bottom part (where a subtitle goes) changed by far more than re-encoding does."""
    rows = slice(130, 180)
    difference = np.abs(burned[index][rows].astype(int) - original[index][rows].astype(int)).max(axis=2)
    return float((difference > 80).mean())


def assert_narration_where_spoken(path: Path) -> None:
    narration = audio_track(path, 0)
    spoken = [loudness(narration, start + 0.1, end - 0.1) for start, end in SPOKEN]
    assert min(spoken) > 0.15, spoken  # the tone's RMS is 0.26
    for start, end in QUIET:
        assert loudness(narration, start, end) < 0.01 * min(spoken), (start, end)


def test_a_session_exports_copied_video_narration_first_original_sound_second_and_soft_subtitles(
    source: Path, tmp_path: Path
) -> None:
    folder = make_session(tmp_path / "2025-05-01_10-00-00_front-door", str(source))
    out = tmp_path / default_export_name(folder)
    assert out.name == "2025-05-01_10-00-00_front-door.mp4"

    result = export_session(folder, out)

    assert result.path == out and out.is_file() and not list(tmp_path.glob(".*.part"))
    assert abs(result.duration - SECONDS) < 0.01 and result.seconds > 0
    assert result.notes == []
    assert result.tracks == [
        "video: H.264 320x180 (copied)",
        "audio 1: narration (AAC, default)",
        "audio 2: original (AAC, copied)",
        "subtitles: mov_text (2 cues)",
    ]
    kinds = streams(out)
    assert [(kind, codec) for kind, codec, _ in kinds] == [
        ("video", "h264"),
        ("audio", "aac"),
        ("audio", "aac"),
        ("subtitle", "mov_text"),
    ]
    source_duration = streams(source)[0][2]
    for kind, _, duration in kinds[:3]:
        assert abs(duration - source_duration) < 0.1, (kind, duration)
    assert kinds[3][2] <= source_duration + 0.1  # a subtitle track lasts to its last cue's end
    assert video_packets(out) == video_packets(source)  # copied: the same frames, byte for byte

    with av.open(str(out)) as container:
        first, second = container.streams.audio
        assert first.metadata.get("handler_name") == "narration" and first.disposition & av.stream.Disposition.default
        assert second.metadata.get("handler_name") == "original"
        assert not second.disposition & av.stream.Disposition.default
        assert container.streams.subtitles[0].language in (None, "und")
    assert_narration_where_spoken(out)
    original = audio_track(out, 1)
    assert loudness(original, 0.1, 1.0) > 0.05 and loudness(original, 2.1, 5.9) > 0.05  # the sine (RMS 0.088) all along

    assert subtitle_cues(out, tmp_path) == expected_cues()


def split_video(source: Path, pattern: Path) -> None:
    """The source's video cut into MPEG-TS segments of 3 s, stream-copied, as the recorder keeps a camera."""
    ffmpeg("-i", str(source), "-map", "0:v", "-c", "copy", "-f", "segment", "-segment_time", "3", str(pattern))


def test_a_segmented_recording_exports_every_frame_at_its_time(source: Path, tmp_path: Path) -> None:
    """A webcam's video kept as MPEG-TS segments: joined, copied, with every frame; the narration is in step."""
    folder = tmp_path / "session"
    folder.mkdir()
    split_video(source, folder / "video-%04d.ts")
    segments = sorted(p.name for p in folder.glob("video-*.ts"))
    assert len(segments) == 2
    make_session(folder, "browser webcam", kind="webcam", video=segments)

    result = export_session(folder, tmp_path / "out.mp4")

    out = tmp_path / "out.mp4"
    assert [(kind, codec) for kind, codec, _ in streams(out)] == [("video", "h264"), ("audio", "aac"),
                                                                   ("subtitle", "mov_text")]  # fmt: skip
    assert "the source has no sound of its own: the MP4 has the narration only" in result.notes
    assert len(video_frames(out)) == len(video_frames(source)) == SECONDS * FPS
    for _, _, duration in streams(out)[:2]:
        assert abs(duration - SECONDS) < 0.1
    assert_narration_where_spoken(out)
    assert subtitle_cues(out, tmp_path) == expected_cues()


def test_a_gap_between_segments_stays_a_gap(source: Path, tmp_path: Path) -> None:
    """A camera that was away for 2 s: the second segment starts 2 s later, and so it does in the MP4."""
    folder = tmp_path / "session"
    folder.mkdir()
    split_video(source, tmp_path / "part-%d.ts")
    (tmp_path / "part-0.ts").rename(folder / "video-0001.ts")
    ffmpeg("-copyts", "-i", str(tmp_path / "part-1.ts"), "-c", "copy", "-output_ts_offset", "2",
           "-muxdelay", "0", "-muxpreload", "0", str(folder / "video-0002.ts"))  # fmt: skip
    make_session(folder, "rtsp://camera/stream", kind="stream", video=["video-0001.ts", "video-0002.ts"])

    result = export_session(folder, tmp_path / "out.mp4")

    assert abs(result.duration - (SECONDS + 2)) < 0.01
    with av.open(str(tmp_path / "out.mp4")) as container:
        times = sorted(float(p.pts * p.time_base) for p in container.demux(video=0) if p.pts is not None)
    assert len(times) == SECONDS * FPS
    jump = max(b - a for a, b in itertools.pairwise(times))
    assert abs(jump - (2 + 1 / FPS)) < 0.01 and abs(times[SECONDS * FPS // 2] - 5.0) < 0.01


def test_a_source_whose_sound_starts_before_its_picture_keeps_narration_and_subtitles_on_the_picture(
    source: Path, tmp_path: Path
) -> None:
    """Media time 0 is the first frame: in a Matroska file whose video starts 0.5 s after its sound, the
    narration and the cues start from the first frame too, not from the file's start."""
    late = tmp_path / "late.mkv"
    ffmpeg("-itsoffset", "0.5", "-i", str(source), "-i", str(source), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
           "-c:a", "libopus", str(late))  # fmt: skip
    folder = make_session(tmp_path / "session", str(late))

    result = export_session(folder, tmp_path / "out.mp4")

    assert result.tracks[2] == "audio 2: original (AAC)"  # Opus: encoded, and padded to the video's end
    out = tmp_path / "out.mp4"
    with av.open(str(out)) as container:
        first_frame = next(container.decode(video=0)).time
    assert 0.45 < first_frame < 0.6
    assert len(video_frames(out)) == SECONDS * FPS
    with av.open(str(out)) as container:
        ends = [float((s.start_time + s.duration) * s.time_base) for s in container.streams]
    assert [round(end, 1) for end in ends[:3]] == [round(first_frame + SECONDS, 1)] * 3, ends  # all end together
    narration = audio_track(out, 0)
    assert loudness(narration, first_frame + 1.1, first_frame + 1.9) > 0.15
    assert loudness(narration, first_frame + 2.1, first_frame + 3.9) < 0.002
    shift = round(first_frame * 1000)
    assert [(a - shift, b - shift, text) for a, b, text in subtitle_cues(out, tmp_path)] == expected_cues()

    export_session(folder, tmp_path / "burned.mp4", burn_subtitles=True)
    burned, original = video_frames(tmp_path / "burned.mp4"), video_frames(source)
    assert [changed(burned, original, round(t * FPS)) > 0.005 for t in (0.8, 1.2, 1.8, 2.2, 4.2)] == [
        False, True, True, False, True,
    ]  # fmt: skip


def test_burned_subtitles_are_in_the_picture_at_their_time(source: Path, tmp_path: Path) -> None:
    """Re-encoded with the cues drawn in, no subtitle track; a folder name that needs escaping in a filter graph."""
    folder = make_session(tmp_path / "it's [a]: b, c; d %x", str(source))
    out = tmp_path / "burned.mp4"

    result = export_session(folder, out, burn_subtitles=True)

    assert result.tracks[0] == "video: H.264 320x180 (subtitles burned in)"
    assert [kind for kind, _, _ in streams(out)] == ["video", "audio", "audio"]
    assert video_packets(out) != video_packets(source)
    burned, original = video_frames(out), video_frames(source)
    assert len(burned) == len(original)

    inside = [changed(burned, original, round(t * FPS)) for t in (1.3, 1.7, 4.2)]
    outside = [changed(burned, original, round(t * FPS)) for t in (0.5, 0.9, 2.1, 3.0, 3.9, 4.6, 5.5)]
    assert min(inside) > 0.005 and max(outside) < 0.001, (inside, outside)  # text while a cue is shown only
    assert_narration_where_spoken(out)


def test_a_camera_that_did_not_speak_exports_its_original_sound_only(source: Path, tmp_path: Path) -> None:
    folder = make_session(tmp_path / "session", str(source), speaks=False, cues=[])

    result = export_session(folder, tmp_path / "out.mp4", burn_subtitles=True)

    assert result.tracks == ["video: H.264 320x180 (copied)", "audio 1: original (AAC, default, copied)"]
    assert "this camera did not speak: the MP4 has the original sound only" in result.notes
    assert "no subtitles to burn in (no comments were kept)" in result.notes
    assert [kind for kind, _, _ in streams(tmp_path / "out.mp4")] == ["video", "audio"]
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.audio[0].metadata.get("handler_name") == "original"


def test_a_looped_file_narrated_past_the_video_is_cut_at_its_end(source: Path, tmp_path: Path) -> None:
    folder = make_session(tmp_path / "session", str(source), cues=[*CUES, Cue(7.0, 8.0, ("Again.",))])
    narration = NarrationFile(folder / "narration.ogg")
    narration.add(1.0, tone(1.0))
    narration.add(7.0, tone(1.0))  # the file played again
    narration.close()

    result = export_session(folder, tmp_path / "out.mp4")

    assert any("past the video's end" in note for note in result.notes), result.notes
    assert "1 subtitle(s) after the video's end left out" in result.notes
    for kind, _, duration in streams(tmp_path / "out.mp4")[:3]:
        assert abs(duration - SECONDS) < 0.1, kind
    assert subtitle_cues(tmp_path / "out.mp4", tmp_path) == expected_cues()


def bad(tmp_path: Path, source: Path, case: str) -> tuple[Path, Path, dict]:
    """A folder, an output and arguments that cannot be exported, for ``case``."""
    out = tmp_path / "out.mp4"
    if case == "no session.json":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", out, {}
    if case == "no such camera":
        return make_session(tmp_path / "s", str(source)), out, {"camera": 1}
    if case == "source gone":
        return make_session(tmp_path / "s", str(tmp_path / "moved away.mp4")), out, {}
    if case == "webcam without video":
        return make_session(tmp_path / "s", "browser webcam", kind="webcam"), out, {}
    if case == "segment missing":
        return make_session(tmp_path / "s", "rtsp://camera", kind="stream", video=["video-0001.ts"]), out, {}
    if case == "export over the source":
        return make_session(tmp_path / "s", str(source)), source, {}
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no session.json", r"/empty is not a recorded session: it has no session\.json$"),
        ("no such camera", r"^there is no camera 1 in this session: it has camera 0$"),
        ("source gone", r"^the source video .*/moved away\.mp4 is gone; export needs it$"),
        ("webcam without video", r"^camera 'cam' \(webcam\) has no recorded video: .*; export needs the video$"),
        ("segment missing", r"^the recorded video video-0001\.ts is missing from .*/s; export needs it$"),
        ("export over the source", r"source\.mp4: that is the source video itself; export to another file name$"),
    ],
)
def test_what_cannot_be_exported_says_why_in_one_line(source: Path, tmp_path: Path, case: str, message: str) -> None:
    folder, out, kwargs = bad(tmp_path, source, case)
    with pytest.raises(OnlookerError, match=message) as caught:
        export_session(folder, out, **kwargs)
    assert "\n" not in str(caught.value)
    assert out == source or not out.exists()


def test_an_ffmpeg_failure_is_one_line_with_its_words_and_leaves_nothing_behind(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_session(tmp_path / "session", str(source))
    out = tmp_path / "out.mp4"
    monkeypatch.setattr(export_module, "NARRATION_BITRATE", "loud")  # FFmpeg refuses it
    with pytest.raises(OnlookerError, match=r"^export failed: FFmpeg exited with code \d+: .*loud") as caught:
        export_session(folder, out)
    assert "\n" not in str(caught.value)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_an_export_over_its_time_limit_is_stopped(source: Path, tmp_path: Path) -> None:
    folder = make_session(tmp_path / "session", str(source))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier export")
    with pytest.raises(OnlookerError, match=r"^export stopped: FFmpeg took longer than 0.001 s$"):
        export_session(folder, out, burn_subtitles=True, timeout=0.001)
    assert out.read_bytes() == b"an earlier export"  # untouched
    assert not list(tmp_path.glob(".*.part"))
