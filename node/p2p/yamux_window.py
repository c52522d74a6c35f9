"""Gives yamux receive window back as go-yamux does: once half the window has been read.

py-libp2p 0.8.1 sends a ``WINDOW_UPDATE`` after every read of a small message: its
"partial slack" branch credits the bytes read whenever the window is below its target at
all, whatever ``PY_YAMUX_RELEASE_ON_READ`` says. Each update is a Noise-encrypted frame and
a socket write: an RPC call carried three of them beside its three data frames, and in a
swarm joining at once they were a tenth of a node's CPU. ``release_window_lazily``
replaces that step with go-yamux's rule (``sendWindowUpdate``: no update until the
window's shortfall reaches half of it), keeping py-libp2p's window auto-tuning.
"""

from __future__ import annotations

from typing import Any


async def _release_lazily(stream: Any, *, bytes_read: int = 0) -> None:
    del bytes_read  # the shortfall below counts every byte read, however it was read
    async with stream.window_lock:
        buffered = len(stream.conn.stream_buffers.get(stream.stream_id, b""))
        shortfall = stream.target_recv_window - (stream.recv_window + buffered)
        if shortfall < stream.target_recv_window // 2:
            return
        stream.recv_window += shortfall
        credit = shortfall + stream._apply_autotune_epoch(buffered)
    await stream.send_window_update(credit, skip_lock=True)


def release_window_lazily() -> None:
    """Make every yamux stream in this process release window as go-yamux does
    (idempotent)."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    YamuxStream._auto_tune_and_send_window_update = _release_lazily  # type: ignore[method-assign,assignment]
