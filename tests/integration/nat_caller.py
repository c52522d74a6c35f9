"""A member that calls a node through a relay and says what carried each call, as JSON.

    python -m tests.integration.nat_caller PEER_DIR BOOTSTRAP LISTEN NODE_ID

It joins through ``BOOTSTRAP`` as a ``client`` listening on ``LISTEN``, reads the node's
signed record from the DHT (once it names a relay), calls its ``status`` (through the
relay its circuit address names), waits up to ``UPGRADE_WAIT`` for DCUtR to leave it a
direct connection (and for its own attempt to end), and calls ``status`` again. It prints
``{"first": ..., "second": ..., "hole_punches": ..., "s": ...}``, each call as
``{"answered": bool, "relayed": bool | null}``, and ``s``, how long after the first call
a direct connection was there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

import keys
from node.p2p.host import PeerHost, quiet_libp2p_logs
from node.p2p.relay import is_circuit
from node.p2p.rpc_client import RpcClient
from protocols import RPC_PROTOCOL, NodeRecord, node_key, verify_record

FIND_WAIT = 60.0
UPGRADE_WAIT = 60.0


async def record_of(host: PeerHost, node: str, operator: bytes) -> NodeRecord:
    """The node's record, once it names a relay."""
    with trio.fail_after(FIND_WAIT):
        while True:
            value = await host.get(node_key(node))
            record = verify_record(value, operator, time.time()) if value else None
            if record is not None and any(is_circuit(a) for a in record.addrs):
                return record
            await trio.sleep(0.5)


async def call(host: PeerHost, record: NodeRecord) -> dict[str, Any]:
    """``status`` on the node; what carried it."""
    try:
        with trio.fail_after(30):
            stream = await host.open_stream(record.peer_id, record.addrs, RPC_PROTOCOL)
            relayed = host.nat.relayed(record.peer_id)
            async with RpcClient(stream, host.certificate).running() as client:
                await client.call("status", {}, timeout=10)
    except Exception as exc:
        return {"answered": False, "error": repr(exc)}
    return {"answered": True, "relayed": relayed}


async def main(peer_dir: Path, bootstrap: str, listen: str, node: str) -> None:
    quiet_libp2p_logs()
    host = PeerHost.of(peer_dir, "client")
    async with host.running([listen], [bootstrap]):
        record = await record_of(host, node, keys.operator_public(peer_dir))
        first = await call(host, record)
        started, direct = trio.current_time(), None
        with trio.move_on_after(UPGRADE_WAIT):  # DCUtR's outcome, and its connection
            while direct is None or not any(host.nat.hole_punches.values()):
                if direct is None and host.nat.relayed(node) is False:
                    direct = round(trio.current_time() - started, 1)
                await trio.sleep(0.1)
        second = await call(host, record)
        punches = host.nat.hole_punches
        print(json.dumps({"first": first, "second": second, "hole_punches": punches, "s": direct}))


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
