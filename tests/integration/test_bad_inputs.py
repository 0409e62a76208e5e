"""Bad input of every kind gets one clear line (no credentials in it) and never hangs or kills the session.

One test per row of ``docs/inputs.md`` that other test files do not already cover; real files written
by FFmpeg and real HTTP servers on loopback, nothing mocked.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.backends.base import Choice
from pipeline.config import load_presets, load_settings
from pipeline.errors import OnlookerError, SourceError
from pipeline.prompts import load_profiles
from pipeline.sources.base import Source
from pipeline.sources.decode import MAX_SIDE
from pipeline.sources.file import FileSource
from pipeline.sources.mjpeg import MjpegSource
from pipeline.sources.resolve import open_source
from tests.helpers.bad_servers import endless_garbage, garbage, trickle, trickle_headers
from tests.helpers.collector import Collector
from tests.helpers.media import (
    faststart,
    rotate_like_a_phone,
    run_ffmpeg,
    top_level_boxes,
    truncated,
    write_quadrant,
    write_vfr,
)
from tests.helpers.mjpeg_server import MjpegTestServer, make_jpeg, multipart
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.tab_page import TabPage
from webui.sessions import SessionManager
from webui.sources import SourceRequest, UploadLimits

SECRET = "s3cret-pw"


def assert_clear(message: str, fragment: str) -> None:
    """The message says what happened in one line and gives no password away."""
    assert fragment in message, message
    assert "\n" not in message and SECRET not in message, message


def final_status(source: Source, timeout: float = 20) -> tuple[str, str, float]:
    """Run a source to its end: (last state, its detail, seconds it took)."""
    started = time.monotonic()
    got = Collector().run(source, timeout)
    state, detail = got.states[-1]
    return state, detail, time.monotonic() - started


@pytest.fixture
def server() -> Iterator[MjpegTestServer]:
    with MjpegTestServer() as srv:
        yield srv


# --- files ---------------------------------------------------------------------------------------


def test_a_codec_ffmpeg_demuxes_but_cannot_decode_fails_at_once(tmp_path: Path):
    path = write_quadrant(tmp_path / "c64.mkv", 320, 200, codec=("-c:v", "a64multi"))  # Commodore 64: no decoder
    with av.open(str(path)) as container:  # a real video stream FFmpeg demuxes, without a decoder for it
        assert container.streams.video and container.streams.video[0].codec_context is None
    with pytest.raises(SourceError) as err:
        open_source(str(path))
    assert_clear(str(err.value), f"{path}: the video codec is not supported by the bundled FFmpeg; re-encode to H.264")


def test_an_mp4_cut_short_before_its_index_says_so(tmp_path: Path, short_video: Path):
    assert top_level_boxes(short_video)[-1] == "moov"  # written by a recorder: index at the end
    path = truncated(short_video, tmp_path / "cut.mp4")
    with pytest.raises(SourceError) as err:
        open_source(str(path))
    assert_clear(str(err.value), "index (moov atom) is missing or damaged, usually because the file was cut short")


def test_a_faststart_mp4_cut_short_plays_what_is_there_then_ends(tmp_path: Path, short_video: Path):
    whole = faststart(short_video, tmp_path / "whole.mp4")
    assert top_level_boxes(whole)[:2] == ["ftyp", "moov"]
    source = FileSource(truncated(whole, tmp_path / "cut.mp4"), rate=8)
    got = Collector().run(source)
    assert [state for state, _ in got.states] == ["connecting", "live", "ended"]
    played = len(got.frames) + source.stats.dropped_late
    assert 10 <= played < 30  # about half of the 2 s at 15 fps: the cut-off last packet is simply not shown


@pytest.mark.parametrize(("width", "height"), [(4000, 3000), (7680, 4320)])
def test_huge_pictures_are_scaled_down_whole_keeping_their_shape(tmp_path: Path, width: int, height: int):
    got = Collector().run(FileSource(write_quadrant(tmp_path / "huge.mp4", width, height), rate=8))
    image = got.frames[0].image
    assert max(image.shape[:2]) == MAX_SIDE
    assert image.shape[1] / image.shape[0] == pytest.approx(width / height, rel=0.01)
    h, w = image.shape[0] // 2, image.shape[1] // 2
    assert image[:h, :w].mean() > 250 and image[h:].mean() < 5 and image[:, w:].mean() < 5  # scaled, not cropped


def test_variable_frame_rate_follows_the_real_timestamps(tmp_path: Path):
    path = write_vfr(tmp_path / "vfr.mp4")
    with av.open(str(path)) as container:
        pts = [frame.time for frame in container.decode(video=0)]
    expected = [t - pts[0] for t in pts]
    assert {round(b - a, 2) for a, b in itertools.pairwise(expected)} == {0.1, 0.03}  # really 10, then 30 fps
    rate = 2
    source = FileSource(path, rate=rate)
    got = Collector().run(source)
    times = [frame.media_time for frame in got.frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert len(times) + source.stats.dropped_late == len(expected)
    assert all(any(abs(t - e) < 1e-6 for e in expected) for t in times)  # each is a real timestamp, none made up
    # Paced by the timestamps, not by the average rate (20 fps), which would show the first second's
    # ten frames in half the time; 0.1 s of slack for the first frame's own lateness on a busy machine.
    start = got.frames[0].wall_time
    assert all(f.wall_time - start >= f.media_time / rate - 0.1 for f in got.frames)


@pytest.mark.parametrize(("degrees", "corner"), [(90, "top right"), (180, "bottom right"), (270, "bottom left")])
def test_phone_videos_come_out_upright(tmp_path: Path, degrees: int, corner: str):
    path = rotate_like_a_phone(write_quadrant(tmp_path / "phone.mp4", 320, 180), degrees)
    image = Collector().run(FileSource(path, rate=8)).frames[0].image
    assert image.shape == ((180, 320, 3) if degrees == 180 else (320, 180, 3))  # landscape pixels, shown portrait
    h, w = image.shape[0] // 2, image.shape[1] // 2
    quarters = {"top left": (0, 0), "top right": (0, w), "bottom left": (h, 0), "bottom right": (h, w)}
    white = max(quarters, key=lambda q: image[quarters[q][0] :, quarters[q][1] :][:h, :w].mean())
    assert white == corner  # the sensor's top-left quarter, turned clockwise as the phone says
    run_ffmpeg("-i", path, "-frames:v", "1", tmp_path / "ffmpeg.png")  # FFmpeg's own player-style autorotation
    reference = cv2.cvtColor(cv2.imread(str(tmp_path / "ffmpeg.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(image, reference)


@pytest.fixture
def sparse_upload(tmp_path: Path) -> Path:
    """A 3 GiB upload that takes no disk space: a sparse file of zeros, not a video at all."""
    path = tmp_path / "huge-upload.mp4"
    with path.open("wb") as file:
        file.truncate(3 * 1024**3)
    return path


def test_an_upload_over_the_size_limit_is_refused_before_it_is_opened(sparse_upload: Path):
    limits = UploadLimits.from_settings(load_settings())  # the defaults: 2048 MB, 180 minutes
    with pytest.raises(OnlookerError) as err:  # not "not a video": FFmpeg never saw it
        limits.open(str(sparse_upload))
    assert_clear(
        str(err.value),
        "huge-upload.mp4: the file is 3,072 MB, over this app's upload limit of 2048 MB "
        "(--max-upload-mb / ONLOOKER_MAX_UPLOAD_MB)",
    )
    assert UploadLimits(megabytes=0).max_bytes is None  # 0 = no limit, for Gradio's max_file_size too


def test_a_bad_upload_is_named_by_its_file_name_not_the_temporary_path(tmp_path: Path):
    upload = tmp_path / "gradio" / "0f3a9c" / "holiday.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_text("not a video\n" * 50)
    with pytest.raises(OnlookerError) as err:
        UploadLimits().open(str(upload))
    assert_clear(str(err.value), "holiday.mp4: not a video FFmpeg can read")
    assert str(upload.parent) not in str(err.value)


def test_an_upload_over_the_duration_limit_is_refused(story_video: Path):
    with pytest.raises(OnlookerError) as err:
        UploadLimits(minutes=0.2).open(str(story_video))
    assert_clear(
        str(err.value),
        "story.mp4: the video is 00:00:14 long, over this app's limit of 0.2 minutes "
        "(--max-upload-minutes / ONLOOKER_MAX_UPLOAD_MINUTES)",
    )
    assert UploadLimits(minutes=0.25).open(str(story_video)).duration == pytest.approx(14, abs=0.1)


# --- network -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", [garbage(200_000), endless_garbage()], ids=["random-bytes", "endless-chunked"])
def test_garbage_served_as_video_is_not_a_video(server: MjpegTestServer, route):
    server.routes["/clip.mp4"] = route
    timeout = 2.0  # endless garbage named .mp4 keeps FFmpeg's MP4 demuxer skipping "boxes" until the deadline
    state, detail, took = final_status(open_source(server.url("/clip.mp4", f"user:{SECRET}"), timeout=timeout))
    assert state == "failed" and took < 2 * timeout + 2
    assert_clear(detail, "not a video FFmpeg can read")


def test_a_server_that_trickles_bytes_times_out_instead_of_hanging(server: MjpegTestServer, short_video: Path):
    timeout = 1.0
    # a byte well within every idle timeout (one a second raced the sniff's 1 s read timeout on a loaded machine)
    server.routes["/clip.mp4"] = trickle(short_video.read_bytes(), every=timeout / 4)
    state, detail, took = final_status(open_source(server.url("/clip.mp4", f"user:{SECRET}"), timeout=timeout))
    assert state == "failed"
    assert_clear(detail, "timed out waiting for data")
    assert took < 2 * timeout + 2  # PyAV's timeout is a deadline for the open, which a trickle cannot reset


def test_a_server_that_trickles_its_headers_times_out(server: MjpegTestServer):
    server.routes["/cam"] = trickle_headers()
    state, detail, took = final_status(open_source(server.url("/cam", f"user:{SECRET}"), timeout=1.0))
    assert state == "failed"
    assert_clear(detail, "took over 2 s to answer and was still sending its headers")
    assert took < 2 + 2  # each byte resets httpx's read timeout, never the header deadline


def test_an_mjpeg_camera_that_trickles_bytes_times_out(server: MjpegTestServer):
    body = multipart([make_jpeg(90)])
    server.routes["/video"] = trickle(body, "multipart/x-mixed-replace; boundary=frame", every=0.25)
    source = MjpegSource(server.url("/video", f"admin:{SECRET}"), read_timeout=1.0)
    state, detail, took = final_status(source)
    assert state == "failed"
    assert_clear(detail, "sent bytes but no whole frame for 1 s")
    assert took < 1.0 + 2  # every byte resets httpx's read timeout, never this deadline


def test_moov_at_the_end_from_a_server_without_range_requests(http_dir, story_video: Path):
    base, root = http_dir  # Python's SimpleHTTPRequestHandler: no Range support
    assert top_level_boxes(story_video)[-1] == "moov" and story_video.stat().st_size > 64 * 1024
    (root / "end.mp4").write_bytes(story_video.read_bytes())
    faststart(story_video, root / "front.mp4")
    url = base.replace("://", f"://user:{SECRET}@")
    state, detail, _ = final_status(open_source(f"{url}/end.mp4"))
    assert state == "failed"
    assert_clear(detail, "the server does not support seeking (HTTP Range requests)")
    assert "-movflags +faststart" in detail
    got = Collector(max_frames=3).run(open_source(f"{url}/front.mp4"))  # the fix the message gives works
    assert len(got.frames) >= 3


@pytest.mark.parametrize(
    ("scheme", "fragment"),
    [
        ("rtsp", "rtsp://***@no-such-camera.invalid/video: cannot resolve host 'no-such-camera.invalid'"),
        ("http", "http://***@no-such-camera.invalid/video: the host name 'no-such-camera.invalid' does not resolve"),
    ],
    ids=["rtsp", "http"],
)
def test_a_host_that_does_not_resolve_is_named(scheme: str, fragment: str):
    url = f"{scheme}://admin:{SECRET}@no-such-camera.invalid/video"  # .invalid never resolves (RFC 6761)
    state, detail, _ = final_status(open_source(url, timeout=5))
    assert state == "failed"
    assert_clear(detail, fragment)


@pytest.mark.parametrize(
    ("status", "userinfo", "fragment"),
    [
        (401, "", "the camera needs credentials; put them in the URL"),
        (401, f"admin:{SECRET}", "the camera rejected the user name or password in the URL"),
        (403, f"admin:{SECRET}", "access is forbidden"),
    ],
)
def test_http_refusals_in_the_url_box(server: MjpegTestServer, status: int, userinfo: str, fragment: str):
    server.routes["/video"] = lambda handler: handler.reply(status, "text/plain", b"no")
    state, detail, _ = final_status(open_source(server.url("/video", userinfo)))
    assert state == "failed"
    assert_clear(detail, f"HTTP {status} from ")
    assert fragment in detail


# --- the session survives ------------------------------------------------------------------------


def test_after_bad_inputs_the_same_tab_starts_a_good_one(tmp_path, monkeypatch, sparse_upload, short_video, server):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(tts="none")
    manager = SessionManager(settings, Choice(ScriptedBackend(), "test"), load_presets(), load_profiles())
    server.routes["/clip.mp4"] = garbage(50_000)
    try:
        with pytest.raises(OnlookerError, match="over this app's upload limit"):
            manager.start("tab", SourceRequest("Upload", str(sparse_upload)), "narrator", "balanced")
        page = TabPage(manager, "tab")
        manager.start("tab", SourceRequest("URL", url=server.url("/clip.mp4")), "narrator", "balanced")
        problem = page.until(lambda m: isinstance(m, dict) and m["type"] in ("problem", "ended"))[-1]
        assert problem["type"] == "problem" and "not a video" in problem["text"]
        viewer = manager.start("tab", SourceRequest("Upload", str(short_video)), "narrator", "balanced")
        page.until(lambda m: isinstance(m, dict) and m["type"] == "final" and m["run"] == viewer.run and m["text"])
        assert manager.active_count() == 1
    finally:
        manager.close_all()


def test_a_protocol_the_bundled_ffmpeg_lacks_says_what_to_do() -> None:
    """PyAV's FFmpeg has no SRT: the message says so instead of calling the scheme unsupported."""
    state, detail, _ = final_status(open_source("srt://127.0.0.1:9/cam?passphrase=" + SECRET, timeout=2))
    assert state == "failed"
    assert_clear(detail, "cannot open srt:// streams; relay the stream to RTSP, RTMP or HLS")
