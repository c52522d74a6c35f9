"""How peers are shown: statuses from records, their JSON, order, filter, summary, table.

Pure: fixed data in, text and values out; times are passed in.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.console import Console

from gateway.api.peers import snapshot
from gateway.client.peer_view import (
    COLUMNS,
    ago,
    human_bytes,
    load_cell,
    memory_cell,
    models_cell,
    render,
    short_addr,
    short_id,
    summary_line,
)
from gateway.routing.peer_table import PeerTable
from protocols import Hardware, Load, ModelInfo, NodeRecord
from protocols.peers import (
    PeerHardware,
    PeerLoad,
    PeerModel,
    PeerStatus,
    arrange,
    summarize,
    to_json,
)

GiB = 1 << 30
T0 = 1_000_000.0


def status(
    peer_id: str,
    role: str = "node",
    models: dict[str, str] | None = None,
    inflight: int = 0,
    queued: int = 0,
    capacity: int = 4,
    backend: str = "cuda",
    memory: tuple[str, int, int] = ("VRAM", 24 * GiB, 20 * GiB),
    healthy: bool = True,
    last_seen: float = 0.5,
) -> PeerStatus:
    node = role == "node"
    return PeerStatus(
        peer_id=peer_id,
        role=role,
        addrs=[f"/ip4/10.0.0.1/tcp/4001/p2p/{peer_id}"],
        version="0.1.0",
        hardware=PeerHardware(backend, "RTX 4090", *memory) if node else None,
        models=[PeerModel(m, "text-generation", "float16", s) for m, s in (models or {}).items()],
        load=PeerLoad(inflight, queued, capacity, 42.5, False) if node else None,
        last_seen=last_seen,
        healthy=healthy,
        rtt_ms=1.5 if node else None,
    )


def record(
    peer_id: str,
    role: str = "node",
    models: dict[str, str] | None = None,
    load: Load | None = None,
) -> NodeRecord:
    return NodeRecord(
        peer_id=peer_id,
        public_key=b"\x00" * 32,
        role=role,
        version="0.2.0",
        addrs=[f"/ip4/10.0.0.2/tcp/4001/p2p/{peer_id}"],
        hardware=Hardware("cuda", "A100", "VRAM", 80 * GiB, 70 * GiB, "2.5.1", "4.57.0", "8.0"),
        models=[
            ModelInfo(m, "text-generation", "bfloat16", 4096, 8, s)
            for m, s in (models or {}).items()
        ],
        load=load or Load(0, 0, 8, 0.0, 70 * GiB),
        seq=1,
        issued_at=T0,
        ttl=30.0,
    )


SWARM = [
    status("12D3KooWnodeBusy0001", models={"llama": "ready"}, inflight=4, queued=2),
    status("12D3KooWnodeIdle0002", models={"llama": "ready"}),
    status("12D3KooWgateway00003", role="gateway"),
    status(
        "12D3KooWnodeCpu00004",
        models={"echo": "ready"},
        backend="cpu",
        memory=("RAM", 64 * GiB, 48 * GiB),
    ),
    status("12D3KooWnodeWarm0005", models={"llama": "loading"}, inflight=1, healthy=False),
]


def test_a_node_status_takes_fresh_memory_and_draining_from_its_live_load() -> None:
    live = Load(2, 1, 8, 12.0, memory_free=10 * GiB, draining=True)
    peer = PeerStatus.from_record(record("n1", models={"m": "ready"}), live, 1.5, True, 3.0)
    assert peer.hardware == PeerHardware("cuda", "A100", "VRAM", 80 * GiB, 10 * GiB)
    assert peer.models == [PeerModel("m", "text-generation", "bfloat16", "draining")]
    assert peer.load == PeerLoad(2, 1, 8, 12.0, True)
    assert (peer.last_seen, peer.healthy, peer.rtt_ms) == (1.5, True, 3.0)


def test_without_live_load_the_record_speaks_and_gateways_have_no_hardware() -> None:
    node = PeerStatus.from_record(record("n1"), None, -0.1, False)
    assert node.load == PeerLoad(0, 0, 8, 0.0, False) and node.last_seen == 0.0
    gateway = PeerStatus.from_record(record("g1", role="gateway"), None, 2.0, True)
    assert gateway.hardware is None and gateway.load is None and gateway.models == []


def test_json_round_trip() -> None:
    for peer in SWARM:
        assert PeerStatus.from_json(peer.to_json()) == peer


@pytest.mark.parametrize(
    "change",
    [
        {"peer_id": 7},
        {"healthy": 1},
        {"last_seen": float("nan")},
        {"hardware": {"backend": "cuda"}},
        {"load": {"inflight": True, "queued": 0, "capacity": 1, "tokens_per_s": 0, "draining": 0}},
        {"models": [{"id": "m", "task": "t", "dtype": "d"}]},
        {"models": "m"},
    ],
)
def test_malformed_entries_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PeerStatus.from_json(SWARM[0].to_json() | change)


def test_gateways_first_then_by_models_then_least_busy() -> None:
    ordered = [p.peer_id[-4:] for p in arrange(SWARM)]
    # echo sorts before llama; among the llama nodes the idle one leads the busy one, and
    # the one not answering comes last.
    assert ordered == ["0003", "0004", "0002", "0001", "0005"]


def test_model_filter_keeps_peers_that_list_the_model_in_any_state() -> None:
    assert [p.peer_id[-4:] for p in arrange(SWARM, "llama")] == ["0002", "0001", "0005"]
    assert arrange(SWARM, "missing") == []


def test_summary_counts_gpus_and_models_ready_on_healthy_peers() -> None:
    summary = summarize(SWARM)
    assert (summary.peers, summary.nodes, summary.gateways, summary.healthy) == (5, 4, 1, 4)
    # The CPU node's memory is system RAM, not VRAM: the totals are the GPUs' alone.
    assert summary.gpus == 3
    assert (summary.memory, summary.memory_total, summary.memory_free) == (
        "VRAM",
        72 * GiB,
        60 * GiB,
    )
    assert summary.models == {"echo": 1, "llama": 2}
    assert summary_line(summary) == (
        "5 peers (1 gateway, 4 nodes, 4 healthy) · 3 GPUs, VRAM 60.0 GiB free of 72.0 GiB"
        " · models ready: echo (1 peer), llama (2 peers)"
    )


def test_summary_of_nothing() -> None:
    assert summary_line(summarize([])) == (
        "0 peers (0 gateways, 0 nodes, 0 healthy) · no GPUs · models ready: none"
    )


def test_a_swarm_of_cpu_nodes_is_summed_as_ram_never_vram() -> None:
    cpus = [
        status("12D3KooWcpu0001", backend="cpu", memory=("RAM", 64 * GiB, 48 * GiB)),
        status("12D3KooWcpu0002", backend="cpu", memory=("RAM", 32 * GiB, 12 * GiB)),
        status("12D3KooWgw000003", role="gateway"),
    ]
    summary = summarize(cpus)
    assert (summary.gpus, summary.memory, summary.memory_total, summary.memory_free) == (
        0,
        "RAM",
        96 * GiB,
        60 * GiB,
    )
    line = summary_line(summary)
    assert "no GPUs, RAM 60.0 GiB free of 96.0 GiB" in line and "VRAM" not in line


def test_apple_and_cuda_gpus_name_both_kinds_of_memory() -> None:
    gpus = [
        status("12D3KooWcuda001", memory=("VRAM", 24 * GiB, 20 * GiB)),
        status("12D3KooWmps0002", backend="mps", memory=("unified", 16 * GiB, 8 * GiB)),
    ]
    assert "2 GPUs, VRAM/unified 28.0 GiB free of 40.0 GiB" in summary_line(summarize(gpus))


@pytest.mark.parametrize(
    ("backend", "memory", "shown"),
    [
        ("cpu", ("RAM", 16 * GiB, 14 * GiB + 819 * (1 << 20)), "1.2/16.0 GiB RAM"),
        ("cuda", ("VRAM", 24 * GiB, 20 * GiB), "4.0/24.0 GiB VRAM"),
        ("mps", ("unified", 36 * GiB, 30 * GiB), "6.0/36.0 GiB unified"),
        ("directml", ("VRAM", 0, 0), "-"),  # no total given: nothing to show
    ],
)
def test_each_row_says_which_memory_it_counts(
    backend: str, memory: tuple[str, int, int], shown: str
) -> None:
    peer = status("12D3KooWnode0001", backend=backend, memory=memory)
    assert memory_cell(peer.hardware).plain == shown
    assert memory_cell(None).plain == "-"


def test_a_cpu_node_shows_ram_and_a_cuda_node_vram_from_their_records() -> None:
    cpu_record = replace(
        record("12D3KooWcpu0001"), hardware=Hardware("cpu", "Xeon", "RAM", 64 * GiB, 0)
    )
    peers = [
        PeerStatus.from_record(cpu_record, Load(0, 0, 8, 0.0, 32 * GiB), 0.1, True),
        PeerStatus.from_record(record("12D3KooWcuda002"), None, 0.1, True),
    ]
    console = Console(record=True, width=200, color_system=None)
    console.print(render(peers))
    lines = console.export_text().splitlines()
    cpu = next(line for line in lines if "cpu0001" in line)
    cuda = next(line for line in lines if "cuda002" in line)
    assert "32.0/64.0 GiB RAM" in cpu and "VRAM" not in cpu
    assert "10.0/80.0 GiB VRAM" in cuda
    assert "1 GPU, VRAM 70.0 GiB free of 80.0 GiB" in lines[-1]


def test_draining_peers_offer_no_models() -> None:
    draining = replace(SWARM[1], load=PeerLoad(0, 0, 4, 0.0, True))
    assert summarize([draining]).models == {}


def test_json_output_has_peers_and_summary() -> None:
    body = to_json(arrange(SWARM, "echo"))
    assert [p["peer_id"] for p in body["peers"]] == ["12D3KooWnodeCpu00004"]
    assert body["summary"]["models"] == {"echo": 1}
    assert body["peers"][0]["load"]["capacity"] == 4


def test_the_table_for_people() -> None:
    console = Console(record=True, width=200, color_system=None)
    console.print(render(arrange(SWARM)))
    text = console.export_text()
    lines = text.splitlines()
    assert lines[0].split() == [
        "PEER", "ROLE", "MODELS", "RUN/QUEUE/CAP", "MEMORY", "used/total", "DEVICE", "SEEN",
        "TOK/S", "ADDRESS", "VERSION",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:6]] == [short_id(p.peer_id) for p in arrange(SWARM)]
    busy = next(line for line in lines if "Busy0001" in line)
    assert "10.0.0.1:4001" in busy and "cuda RTX 4090" in busy and "4.0/24.0 GiB VRAM" in busy
    cpu = next(line for line in lines if "Cpu00004" in line)
    assert "16.0/64.0 GiB RAM" in cpu and "VRAM" not in cpu
    assert "llama" in busy and "4/2/4" in busy and "42.5" in busy and "0.1.0" in busy
    warm = next(line for line in lines if "Warm0005" in line)
    assert "llama (loading)" in warm and "not responding" in warm
    assert lines[-1].startswith("5 peers (1 gateway, 4 nodes, 4 healthy)")


def test_model_states_and_load_are_coloured() -> None:
    cell = models_cell(
        [
            PeerModel("a", "text-generation", "f16", "ready"),
            PeerModel("b", "text-generation", "f16", "loading"),
            PeerModel("c", "text-generation", "f16", "draining"),
        ]
    )
    styles = {cell.plain[s.start : s.end]: str(s.style) for s in cell.spans}
    assert styles == {"a": "green", "b (loading)": "yellow", "c (draining)": "red"}
    assert str(load_cell(PeerLoad(1, 0, 4, 0.0, False)).style) == ""
    assert str(load_cell(PeerLoad(4, 1, 4, 0.0, False)).style) == "yellow"
    assert str(load_cell(PeerLoad(0, 0, 4, 0.0, True)).style) == "red"


@pytest.mark.parametrize(
    ("n", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (24 * GiB, "24.0 GiB"), (3 << 40, "3.0 TiB")],
)
def test_human_bytes(n: int, shown: str) -> None:
    assert human_bytes(n) == shown


def test_short_forms() -> None:
    assert short_id("12D3KooWAbCdEfGh12345678") == "12345678"
    assert short_addr("/ip4/10.0.0.5/tcp/4001/p2p/12D3KooWx") == "10.0.0.5:4001"
    assert short_addr("/ip6/::1/tcp/4001") == "[::1]:4001"
    assert short_addr("/dns4/example.org/tcp/4001/ws") == "/dns4/example.org/tcp/4001/ws"
    circuit = "/p2p/12D3KooWRelay0012345678/p2p-circuit/p2p/12D3KooWNode"
    assert short_addr(circuit) == "relay 12345678"
    assert [ago(s) for s in (0.4, 12, 185, 7300)] == ["now", "12s ago", "3m05s ago", "2h01m ago"]


def test_the_gateway_lists_itself_then_its_nodes() -> None:
    table = PeerTable()
    table.upsert(record("12D3KooWfresh", models={"m": "ready"}), now=T0)
    table.update_load("12D3KooWfresh", Load(1, 0, 8, 5.0, 60 * GiB), now=T0)
    table.entries["12D3KooWfresh"].rtt = 0.0042
    table.upsert(record("12D3KooWsilent", models={"m": "ready"}), now=T0 - 10)
    peers = snapshot(table, "12D3KooWgw", ["/ip4/1.2.3.4/tcp/1/p2p/12D3KooWgw"], now=T0 + 1)
    assert [(p["peer_id"], p["role"]) for p in peers] == [
        ("12D3KooWgw", "gateway"),
        ("12D3KooWfresh", "node"),
        ("12D3KooWsilent", "node"),
    ]
    gateway, fresh, silent = peers
    assert gateway["healthy"] and gateway["hardware"] is None and gateway["version"]
    assert fresh["healthy"] and fresh["rtt_ms"] == 4.2 and fresh["last_seen"] == 1.0
    assert fresh["load"]["inflight"] == 1 and fresh["hardware"]["memory_free"] == 60 * GiB
    assert fresh["hardware"]["memory"] == "VRAM"
    # Known from its record only: never connected, so not healthy and no rtt.
    assert not silent["healthy"] and silent["rtt_ms"] is None and silent["last_seen"] == 11.0
    assert all(PeerStatus.from_json(p).to_json() == p for p in peers)


@pytest.mark.parametrize("width", [80, 60, 40])
def test_a_narrow_terminal_drops_the_least_important_columns_and_says_so(width: int) -> None:
    console = Console(record=True, width=width, color_system=None)
    console.print(render(arrange(SWARM), width))
    lines = console.export_text().splitlines()
    assert all(len(line.rstrip()) <= width for line in lines)
    header = lines[0].split()
    assert header[:2] == ["PEER", "ROLE"]
    names = [c.name for c in COLUMNS]
    kept = [c for c in names if c.split()[0] in header]
    assert kept == names[: len(kept)]  # given up from the end, in order
    dropped = ", ".join(names[len(kept) :])
    footer = " ".join(line.strip() for line in lines if "not shown" in line or "--wide" in line)
    assert "not shown for width:" in footer and "(--wide shows all)" in footer
    assert dropped.split(", ")[-1] in footer  # every hidden column is named
    for peer in arrange(SWARM):
        assert any(line.startswith(short_id(peer.peer_id)) for line in lines)


def test_wide_shows_every_column() -> None:
    console = Console(record=True, width=400, color_system=None)
    console.print(render(arrange(SWARM), None))
    text = console.export_text()
    assert all(c.name.split()[0] in text.splitlines()[0] for c in COLUMNS)
    assert "not shown" not in text
