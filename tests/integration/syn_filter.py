"""Drops TCP connection attempts on their way out of an interface: a NAT's filtering.

A NAT lets in nothing nobody inside asked for: a SYN from outside finds no mapping and is
dropped, while the answers to connections opened from inside pass. Without netfilter (this
kernel has neither iptables nor nftables) the same is done by an eBPF program on the
router's interface towards the inside: a TCP segment with SYN set and ACK clear is dropped,
every other packet passes. The program is loaded with the ``bpf`` syscall, pinned in a
bpffs mounted in a private mount namespace (it is gone with it; the attached program
stays), and attached with ``tc`` (``attach``).

    python -m tests.integration.syn_filter PIN_PATH    # load and pin (under unshare -m)
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile

BPF_PROG_LOAD, BPF_OBJ_PIN = 5, 6
SCHED_CLS = 3
SKB_LOAD_BYTES = 26  # bpf_skb_load_bytes(skb, offset, to, len)
TC_ACT_OK, TC_ACT_SHOT = 0, 2
SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _load_byte(offset_reg: int | None, offset: int, size: int) -> list[bytes]:
    """r1 = skb, r2 = offset (a register already holding it, or ``offset``), read ``size``
    bytes to the stack at r10 - 8; r0 is the helper's result."""
    mov_reg, mov_imm, add_imm = 0xBF, 0xB7, 0x07
    code = [_insn(mov_reg, dst=1, src=6)]
    if offset_reg is None:
        code.append(_insn(mov_imm, dst=2, imm=offset))
    code += [
        _insn(mov_reg, dst=3, src=10),
        _insn(add_imm, dst=3, imm=-8),
        _insn(mov_imm, dst=4, imm=size),
        _insn(0x85, imm=SKB_LOAD_BYTES),
    ]
    return code


def program() -> bytes:
    """Drop IPv4 TCP segments with SYN and not ACK; pass everything else."""
    ldx_b, ldx_h, jne, and_imm, lsh_imm, add_imm, mov_imm = 0x71, 0x69, 0x55, 0x57, 0x67, 0x07, 0xB7
    body: list[bytes | tuple[int, int, int]] = [_insn(0xBF, dst=6, src=1)]  # r6 = skb
    # (jne, register, value) entries jump to "pass" once offsets are known.
    body += _load_byte(None, 12, 2)
    body += [(jne, 0, 0), _insn(ldx_h, dst=1, src=10, off=-8), (jne, 1, 0x0008)]  # IPv4
    body += _load_byte(None, 23, 1)
    body += [(jne, 0, 0), _insn(ldx_b, dst=1, src=10, off=-8), (jne, 1, 6)]  # TCP
    body += _load_byte(None, 14, 1)  # version and header length
    body += [(jne, 0, 0), _insn(ldx_b, dst=2, src=10, off=-8)]
    body += [_insn(and_imm, dst=2, imm=0x0F), _insn(lsh_imm, dst=2, imm=2)]
    body += [_insn(add_imm, dst=2, imm=14 + 13)]  # Ethernet, IP header, then TCP flags
    body += _load_byte(2, 0, 1)
    body += [(jne, 0, 0), _insn(ldx_b, dst=1, src=10, off=-8)]
    body += [_insn(and_imm, dst=1, imm=0x12), (jne, 1, 0x02)]  # SYN without ACK
    body += [_insn(mov_imm, dst=0, imm=TC_ACT_SHOT), _insn(0x95)]
    passing = len(body)
    out = b""
    for pc, item in enumerate(body):
        if isinstance(item, tuple):
            code, reg, value = item
            out += _insn(code, dst=reg, off=passing - pc - 1, imm=value)
        else:
            out += item
    return out + _insn(mov_imm, dst=0, imm=TC_ACT_OK) + _insn(0x95)


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    if SYSCALL_BPF is None:
        raise OSError(f"no bpf syscall number known for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.syscall(SYSCALL_BPF, command, attr, len(attr)))
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def load() -> int:
    """Load the program; its file descriptor."""
    code = ctypes.create_string_buffer(program())
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    attr = ctypes.create_string_buffer(128)
    count = (len(code) - 1) // 8  # create_string_buffer adds a NUL
    struct.pack_into(
        "<IIQQIIQ", attr, 0, SCHED_CLS, count, ctypes.addressof(code),
        ctypes.addressof(license_), 1, len(log), ctypes.addressof(log),
    )  # fmt: skip
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        raise OSError(f"{exc}: {log.value.decode(errors='replace')}") from exc


def load_and_pin(path: str) -> None:
    fd = load()
    name = ctypes.create_string_buffer(path.encode())
    pin = ctypes.create_string_buffer(128)
    struct.pack_into("<QI", pin, 0, ctypes.addressof(name), fd)
    _bpf(BPF_OBJ_PIN, pin)


def unavailable() -> str | None:
    """Why the filter cannot be used here, or ``None`` if it can."""
    for tool in ("tc", "unshare"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command"
    try:
        os.close(load())
    except OSError as exc:
        return f"cannot load an eBPF program: {exc}"
    return None


def attach(namespace: str, interface: str) -> None:
    """Drop connection attempts leaving ``interface`` in ``namespace`` (towards the inside)."""
    # Not /sys/fs/bpf: ``tc -n`` mounts a /sys of its own over it.
    with tempfile.TemporaryDirectory(prefix="blbpf") as bpffs:
        pin = f"{bpffs}/syn"
        script = " && ".join(
            [
                f"mount -t bpf bpf {bpffs}",
                f"{sys.executable} -m tests.integration.syn_filter {pin}",
                f"tc -n {namespace} qdisc add dev {interface} clsact",
                f"tc -n {namespace} filter add dev {interface} egress bpf da object-pinned {pin}",
            ]
        )
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise OSError(f"cannot attach the SYN filter: {done.stderr.strip()}")


if __name__ == "__main__":
    load_and_pin(sys.argv[1])
