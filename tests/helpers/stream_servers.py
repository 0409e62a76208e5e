"""Real live-stream servers on 127.0.0.1 for the source tests: an RTSP camera (GStreamer's RTSP
server), VLC streaming RTSP and MPEG-TS over HTTP, FFmpeg serving RTMP and a live HLS playlist. Each
can be killed, frozen and restarted on the same address, the way a camera reboots or a network hangs.

VLC refuses to run as root; under root (CI) it runs as ``nobody``, so its clip is copied into a
folder that user can read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.helpers.mjpeg_server import free_port, is_listening

NOBODY = 65534


SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, with the GObject bindings the RTSP camera needs
RTSP_CAMERA = Path(__file__).with_name("rtsp_camera.py")


def vlc_available() -> bool:
    return shutil.which("cvlc") is not None


def rtsp_camera_available() -> bool:
    """Whether GStreamer's RTSP server and x264 can run (Debian packages; scripts/setup.sh --dev)."""
    if not SYSTEM_PYTHON.exists():
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; "
    probe += "Gst.init(None); assert Gst.ElementFactory.find('x264enc')"
    return subprocess.run([str(SYSTEM_PYTHON), "-c", probe], capture_output=True, timeout=30).returncode == 0


class ServerProcess:
    """One server command, restartable: ``start`` waits until it is ready, ``kill`` drops every client
    at once (a crash or power cut), ``freeze``/``thaw`` make it hang without closing anything."""

    def __init__(self, cmd: list[str], log_path: Path, *, port: int | None = None, ready: Path | None = None) -> None:
        self.cmd = cmd
        self.port = port
        self.ready = ready  # a file that exists once the server can serve (HLS playlists)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.as_nobody = False

    def start(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        with self.log_path.open("ab") as log:
            extra = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if self.as_nobody else {}
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **extra
            )
        tick = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if (self.port is None or is_listening(self.port)) and (self.ready is None or self.ready.exists()):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[0]} exited with {self.proc.returncode}: {self.log_path.read_text()}")
            tick.wait(0.02)  # polling a condition, not a fixed sleep: there is no readiness signal to wait on
        raise TimeoutError(f"{self.cmd[0]} was not ready within {timeout} s: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """Gone at once, as in a crash: sockets are reset, nothing is flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen process must be able to die
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        """The server hangs: connections stay open and nothing more arrives."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def close(self) -> None:
        self.kill()


def _readable_copy(clip: Path) -> Path:
    """The clip in a folder anyone can read (VLC runs as ``nobody`` under root)."""
    folder = Path(tempfile.mkdtemp(prefix="onlooker-vlc-"))
    folder.chmod(0o755)
    copy = folder / clip.name
    shutil.copy(clip, copy)
    copy.chmod(0o644)
    return copy


def rtsp_camera(
    log_path: Path, *, size: str = "320x180", fps: int = 15, extra: tuple[str, ...] = ()
) -> tuple[ServerProcess, str]:
    """A live H.264 RTSP camera (``tests/helpers/rtsp_camera.py``); ``extra`` adds its flags (credentials, clock)."""
    port = free_port()
    cmd = [str(SYSTEM_PYTHON), str(RTSP_CAMERA), "--port", str(port), "--size", size, "--fps", str(fps), *extra]
    return ServerProcess(cmd, log_path, port=port), f"rtsp://127.0.0.1:{port}/live"


def vlc(clip: Path, log_path: Path, sout: str, port: int) -> ServerProcess:
    """VLC looping ``clip`` out through the stream-output chain ``sout``."""
    source = _readable_copy(clip) if os.geteuid() == 0 else clip
    cmd = ["cvlc", "--no-audio", "--loop", "--sout-keep", str(source), "--sout", sout]
    server = ServerProcess(cmd, log_path, port=port)
    server.as_nobody = os.geteuid() == 0
    return server


def vlc_rtsp(clip: Path, log_path: Path) -> tuple[ServerProcess, str]:
    """VLC's own RTSP server (``#rtp{sdp=rtsp://…}``): RTP over UDP only (it answers TCP with 461)."""
    port = free_port()
    return vlc(clip, log_path, f"#rtp{{sdp=rtsp://127.0.0.1:{port}/live}}", port), f"rtsp://127.0.0.1:{port}/live"


def vlc_http_ts(clip: Path, log_path: Path) -> tuple[ServerProcess, str]:
    """VLC's "stream over HTTP" as people set it up in its Stream wizard: MPEG-TS, no end, no length."""
    port = free_port()
    sout = f"#standard{{access=http,mux=ts,dst=127.0.0.1:{port}/cam.ts}}"
    return vlc(clip, log_path, sout, port), f"http://127.0.0.1:{port}/cam.ts"


def _ffmpeg_live(clip: Path) -> list[str]:
    """FFmpeg reading ``clip`` forever at its own pace, stream-copied (no re-encoding cost)."""
    return ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re", "-stream_loop", "-1",
            "-i", str(clip), "-an", "-c:v", "copy"]  # fmt: skip


def ffmpeg_rtmp(clip: Path, log_path: Path) -> tuple[ServerProcess, str]:
    """FFmpeg as an RTMP server (``-listen 1``): one player at a time, as a camera's RTMP port."""
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/cam"
    return ServerProcess([*_ffmpeg_live(clip), "-f", "flv", "-listen", "1", url], log_path, port=port), url


def ffmpeg_live_hls(clip: Path, folder: Path, log_path: Path) -> ServerProcess:
    """FFmpeg writing a live HLS playlist (1 s segments, a sliding list of 4, no end) into ``folder``,
    which the test serves over HTTP; ready once the playlist lists its first segments."""
    playlist = folder / "live.m3u8"
    cmd = [*_ffmpeg_live(clip), "-f", "hls", "-hls_time", "1", "-hls_list_size", "4",
           "-hls_flags", "delete_segments", str(playlist)]  # fmt: skip
    return ServerProcess(cmd, log_path, ready=playlist)
