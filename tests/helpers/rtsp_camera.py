"""A live RTSP camera on loopback: GStreamer's RTSP server (gst-rtsp-server), H.264 from x264.

Run with Debian's Python, which has the GObject bindings (``/usr/bin/python3 tests/helpers/rtsp_camera.py``):
the project's Python need not. It serves RTP over UDP or interleaved in TCP, as the client asks, and
optional Basic credentials, like an IP camera. ``--clock`` draws each frame's capture time
(milliseconds since the epoch, 44 bits) as black and white blocks across the top of the picture, so a
reader can tell how old each frame it decodes is (``bench/sources.py``); otherwise it shows GStreamer's
moving test pattern.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gi

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run by file path: make ``tests.helpers`` importable
from tests.helpers.camera_clock import clock_frame

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


class ClockFactory(GstRtspServer.RTSPMediaFactory):
    """Frames made on demand by the pipeline's clock: the time drawn is the moment of capture."""

    def __init__(self, width: int, height: int, fps: int, encoder: str) -> None:
        super().__init__()
        self.size, self.fps, self.encoder = (width, height), fps, encoder

    def do_create_element(self, url: object) -> Gst.Element:
        width, height = self.size
        caps = f"video/x-raw,format=I420,width={width},height={height},framerate={self.fps}/1"
        pipeline = Gst.parse_launch(
            f"appsrc name=cam is-live=true do-timestamp=true format=time caps={caps} ! {self.encoder}"
        )
        pipeline.get_by_name("cam").connect("need-data", self._feed)
        return pipeline

    def _feed(self, src: Gst.Element, _length: int) -> None:
        now = time.time()
        period = 1.0 / self.fps
        time.sleep(period - now % period)  # the camera's shutter: one frame per period, on the wall clock
        data = clock_frame(*self.size, int(time.time() * 1000))
        src.emit("push-buffer", Gst.Buffer.new_wrapped(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/live")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--clock", action="store_true", help="draw the capture time into each frame")
    parser.add_argument("--only", choices=["tcp", "udp"], help="offer one RTP transport, as some cameras do")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    Gst.init(None)
    encoder = (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=4000 "
        "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
    )
    if args.clock:
        factory: GstRtspServer.RTSPMediaFactory = ClockFactory(width, height, args.fps, encoder)
    else:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
            f"framerate={args.fps}/1 ! {encoder} )"
        )
    factory.set_shared(True)  # one camera, many viewers
    if args.only:
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP if args.only == "tcp" else GstRtsp.RTSPLowerTrans.UDP)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(
            Gst.Structure.new_from_string("viewer,media.factory.access=true,media.factory.construct=true")
        )
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    server.attach(None)
    print(f"serving rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
