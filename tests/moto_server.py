"""A real S3-compatible server (moto's server mode) on a free loopback port: the one way the tests start one."""

from __future__ import annotations

import contextlib
import socket


@contextlib.contextmanager
def moto_server():
    """The endpoint URL of a moto server running for the block."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
