"""A test RTSP camera: serves a video file, looped, at rtsp://127.0.0.1:PORT/cam with GStreamer's RTSP server.

Run with the system Python (PyGObject from Debian's python3-gi, GstRtspServer from gir1.2-gst-rtsp-server-1.0):
    /usr/bin/python3 tests/rtsp_camera.py clip.mp4 8554
Prints "ready" once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
path, port = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f"( multifilesrc location={path} loop=true ! qtdemux ! h264parse ! "
                   "rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
