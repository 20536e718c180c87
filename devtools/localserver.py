"""A loopback HTTP server over a folder, for tests and benchmarks (img2dataset fetches from it).

Thread-based and bounded: it serves on 127.0.0.1 only, on a free port, and shuts itself down after
`max_seconds` even if the caller never leaves the `with` block.
"""
from __future__ import annotations

import functools
import http.server
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Handler(http.server.SimpleHTTPRequestHandler):
    routes: dict[str, Route] = {}
    delay: Callable[[str], float] = staticmethod(lambda path: 0.0)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        pause = self.delay(self.path.split("?")[0])
        if pause:
            time.sleep(pause)
        route = self.routes.get(self.path.split("?")[0])
        if route is not None:
            route(self)
        else:
            super().do_GET()

    def log_message(self, format, *args):  # noqa: A002 - keep test and benchmark output quiet
        pass


@contextmanager
def serve_directory(root: str | Path, *, max_seconds: float = 600, routes: dict[str, Route] | None = None,
                    delay: float | Callable[[str], float] = 0.0) -> Iterator[str]:
    """Serve `root` at the yielded base URL (no trailing slash); `routes` maps a path to a custom responder,
    `delay` (seconds, or a function of the request path giving them) is added before every reply to stand
    in for slow remote hosts - a per-path delay changes the order in which parallel downloads finish."""
    pause = delay if callable(delay) else (lambda path, seconds=float(delay): seconds)
    handler = type("Handler", (_Handler,), {"routes": dict(routes or {}), "delay": staticmethod(pause)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="localserver", daemon=True)
    thread.start()
    timer = threading.Timer(max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
