"""Live sources against real stream servers on loopback: an RTSP camera (GStreamer's RTSP server, TCP
and UDP, credentials), VLC's RTSP and HTTP streams, FFmpeg's RTMP and a live HLS playlist; cameras
killed, frozen and restarted while a session comments on them."""

from __future__ import annotations

import itertools
import statistics
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.config import Tuning
from pipeline.events import CommentaryStarted, Event, EventBus, SourceStatus
from pipeline.frames import Frame
from pipeline.hub import LAG_FRAMES, FrameHub
from pipeline.session import Session
from pipeline.sources.resolve import open_source
from pipeline.sources.stream import StreamSource
from tests.helpers.camera_clock import read_clock
from tests.helpers.media import Segment, write_video
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.session_run import Watcher, one_camera
from tests.helpers.stream_servers import (
    ServerProcess,
    ffmpeg_live_hls,
    ffmpeg_rtmp,
    rtsp_camera,
    rtsp_camera_available,
    vlc_available,
    vlc_http_ts,
    vlc_rtsp,
)

needs_vlc = pytest.mark.skipif(not vlc_available(), reason="VLC is not installed (scripts/setup.sh --dev)")
needs_camera = pytest.mark.skipif(
    not rtsp_camera_available(), reason="GStreamer's RTSP server is not installed (scripts/setup.sh --dev)"
)


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s, 320x180, 15 fps, a keyframe every second (a camera's usual GOP), two scenes."""
    folder = tmp_path_factory.mktemp("live")
    return write_video(folder / "cam.mp4", [Segment(3, 0, moving=True), Segment(3, 1, moving=True)])


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test starts; all are killed at the end, pass or fail."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.close()


def read_frames(
    source: StreamSource, count: int, timeout: float = 30, counts: Callable[[Frame], bool] = lambda frame: True
) -> tuple[list[Frame], list[str]]:
    """Run the source until ``count`` frames that ``counts`` arrived; the frames and the states it reported."""
    frames: list[Frame] = []
    states: list[str] = []
    done = threading.Event()

    def on_frame(frame: Frame) -> None:
        frames.append(frame)
        if sum(map(counts, frames)) >= count:
            done.set()

    def on_status(state: str, detail: str) -> None:
        states.append(state)
        if state in ("failed", "ended"):
            done.set()

    source.start(on_frame, on_status)
    try:
        assert done.wait(timeout), f"no {count} frames within {timeout} s: {states}"
    finally:
        source.stop()
    assert not source.running
    return frames, states


def assert_live_video(frames: list[Frame], states: list[str]) -> None:
    assert states[:2] == ["connecting", "live"] and "failed" not in states, states
    assert frames[0].image.shape == (180, 320, 3)
    times = [f.media_time for f in frames]
    assert all(b > a for a, b in itertools.pairwise(times)), times


@pytest.fixture
def camera(tmp_path: Path, servers: list[ServerProcess]) -> Callable[..., str]:
    """Start an RTSP camera with the given flags; its URL."""

    def start(*extra: str) -> str:
        server, url = rtsp_camera(tmp_path / f"camera{len(servers)}.log", extra=extra)
        servers.append(server)
        server.start()
        return url

    return start


@needs_camera
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_transport_setting_is_what_the_camera_gets(camera, transport: str) -> None:
    """The camera offers only one transport, so a source that ignored the setting would fail."""
    url = camera("--only", transport)
    source = open_source(url, timeout=5, rtsp_transport=transport)
    frames, states = read_frames(source, 20)
    assert_live_video(frames, states)
    assert source.live


@needs_camera
def test_rtsp_camera_that_offers_only_the_other_transport_says_which_to_pick(camera) -> None:
    url = camera("--only", "udp")
    details: list[str] = []
    source = open_source(url, timeout=5, rtsp_transport="tcp")
    source.start(lambda frame: None, lambda state, detail: details.append(f"{state}: {detail}"))
    assert source.join(15)
    assert details[-1].startswith("failed: ") and "switch --rtsp-transport" in details[-1], details


@needs_camera
def test_rtsp_credentials_are_used_and_never_shown(camera) -> None:
    url = camera("--user", "admin", "--password", "s3cret-pw")
    authed = url.replace("rtsp://", "rtsp://admin:s3cret-pw@")
    source = open_source(authed, timeout=5)
    frames, states = read_frames(source, 10)
    assert_live_video(frames, states)
    assert "s3cret" not in source.display_name + source.source_id
    details: list[str] = []
    wrong = open_source(authed.replace("s3cret-pw", "wrong-pw"), timeout=5)
    wrong.start(lambda frame: None, lambda state, detail: details.append(f"{state}: {detail}"))
    assert wrong.join(15)
    assert "access denied" in details[-1] and "pw" not in " ".join(details), details


@needs_vlc
def test_vlc_rtsp_stream(live_clip: Path, tmp_path: Path, servers) -> None:
    server, url = vlc_rtsp(live_clip, tmp_path / "vlc.log")
    servers.append(server)
    server.start()
    frames, states = read_frames(open_source(url, timeout=5, rtsp_transport="udp"), 20)
    assert_live_video(frames, states)


@needs_vlc
def test_vlc_http_stream_is_live(live_clip: Path, tmp_path: Path, servers) -> None:
    """VLC's "stream over HTTP" (MPEG-TS with no length) is sniffed as video and treated as live."""
    server, url = vlc_http_ts(live_clip, tmp_path / "vlc.log")
    servers.append(server)
    server.start()
    source = open_source(url, timeout=5)
    frames, states = read_frames(source, 20)
    assert_live_video(frames, states)
    assert source.live


def test_rtmp_from_ffmpeg(live_clip: Path, tmp_path: Path, servers) -> None:
    server, url = ffmpeg_rtmp(live_clip, tmp_path / "ffmpeg.log")
    servers.append(server)
    server.start()
    frames, states = read_frames(open_source(url, timeout=5), 20)
    assert_live_video(frames, states)


def test_live_hls_playlist_is_a_live_source(live_clip: Path, tmp_path: Path, servers, http_dir) -> None:
    base, root = http_dir
    server = ffmpeg_live_hls(live_clip, root, tmp_path / "ffmpeg.log")
    servers.append(server)
    server.start()
    source = open_source(f"{base}/live.m3u8", timeout=5)
    frames, states = read_frames(source, 20)
    assert_live_video(frames, states)
    assert source.live  # no #EXT-X-ENDLIST: it is not paced like a file and never "ends" quietly


# --- outages while a session comments ----------------------------------------------------------


def comment_triggers(events: list[Event]) -> list[str]:
    return [e.trigger for e in events if isinstance(e, CommentaryStarted)]


@pytest.fixture
def commentary_session() -> Iterator[Callable[[StreamSource], Watcher]]:
    """Start a session with a scripted model on a source, commenting every second; stopped at the end."""
    sessions: list[Session] = []

    def start(source: StreamSource) -> Watcher:
        tuning = Tuning(active_interval=1.0, min_interval=0.5, heartbeat=1.0)
        session = one_camera(ScriptedBackend(), tuning=tuning, stall_after=1.0)
        sessions.append(session)
        watcher = Watcher(session)
        session.start(source)
        return watcher

    yield start
    for session in sessions:
        session.stop()


def assert_feed_back_comment(watcher: Watcher, outage_from: int) -> None:
    """No comment while the feed was away; the first one after it says the feed came back."""
    started = watcher.until(lambda e: isinstance(e, CommentaryStarted), "comment after the feed returned")
    assert isinstance(started, CommentaryStarted)
    during = comment_triggers(watcher.seen[outage_from:-1])
    assert during == [], f"commented on a frozen picture: {during}"
    assert started.trigger == "feed_back"


def commenting_on_a_camera(camera, servers, commentary_session, read_timeout: float) -> tuple[ServerProcess, Watcher]:
    """A camera, and a session commenting on it: live and past its first comment."""
    url = camera()
    watcher = commentary_session(StreamSource(url, timeout=read_timeout))
    watcher.state("live")
    watcher.until(lambda e: isinstance(e, CommentaryStarted), "first comment")
    return servers[-1], watcher


@needs_camera
def test_a_camera_that_restarts_is_reconnected_and_the_commentary_says_so(camera, servers, commentary_session) -> None:
    server, watcher = commenting_on_a_camera(camera, servers, commentary_session, read_timeout=3)
    server.kill()
    outage_from = len(watcher.seen)
    reconnecting = watcher.state("reconnecting")
    assert "retry 1 in" in reconnecting.detail, reconnecting.detail
    server.start()
    back = watcher.state("live", timeout=20)
    assert back.detail.startswith("back after"), back.detail
    assert_feed_back_comment(watcher, outage_from)


@needs_camera
def test_a_hung_camera_is_stalled_then_reconnected(camera, servers, commentary_session) -> None:
    server, watcher = commenting_on_a_camera(camera, servers, commentary_session, read_timeout=2)
    server.freeze()
    outage_from = len(watcher.seen)
    watcher.state("stalled")  # the watchdog, long before the read times out
    watcher.state("reconnecting")  # the read timed out: the reader gives up on the hung connection
    server.kill()
    server.start()
    watcher.state("live", timeout=20)
    states = [e.state for e in watcher.seen[outage_from:] if isinstance(e, SourceStatus)]
    assert states[:2] == ["stalled", "reconnecting"] and states[-1] == "live", states
    assert_feed_back_comment(watcher, outage_from)


@needs_camera
def test_rtsp_frames_carry_when_the_camera_took_them(camera) -> None:
    """The capture time from the camera's RTCP reports matches the clock the camera drew into the
    picture; the session's source lag is the age of frames at decoding."""
    url = camera("--clock", "--size", "640x360", "--fps", "30")
    # the first sender report may take a few seconds: frames before it have no capture time
    frames, _ = read_frames(open_source(url, timeout=5), 30, counts=lambda f: f.capture_time is not None)
    timed = [f for f in frames if f.capture_time is not None]
    errors = [abs(f.capture_time - read_clock(f.image)) for f in timed]
    assert max(errors) < 0.03, errors
    hub = FrameHub(EventBus(), Tuning())
    for frame in timed:
        hub.push(frame)
    lag = hub.source_lag()
    assert lag is not None and 0 < lag == statistics.median(f.wall_time - f.capture_time for f in timed[-LAG_FRAMES:])


def test_streams_without_a_capture_clock_report_no_lag(live_clip: Path, tmp_path: Path, servers) -> None:
    server, url = ffmpeg_rtmp(live_clip, tmp_path / "ffmpeg.log")
    servers.append(server)
    server.start()
    frames, _ = read_frames(open_source(url, timeout=5), 5)
    assert all(f.capture_time is None for f in frames)
