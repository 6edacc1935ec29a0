"""Loopback helpers shared by tests: a free port, and an aiohttp app served from a thread."""
from __future__ import annotations

import asyncio
import socket
import threading

from aiohttp import web


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_in_thread(app: web.Application, port: int) -> asyncio.AbstractEventLoop:
    """Serve `app` on 127.0.0.1:port from a daemon thread; return its loop (to stop it)."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, name=f"loopback-{port}", daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError(f"the loopback server on port {port} did not start")
    return loop
