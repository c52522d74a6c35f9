"""Network namespaces standing in for machines: real interfaces, addresses and routes.

A ``Lan`` is a bridge in the root namespace with one namespace per machine, each joined to
it by a veth pair: machines on it reach each other (multicast too: mDNS works), and the
root namespace, where the test runs, reaches all of them at the bridge's side. A machine
may instead hang off a link of its own (``isolated``): it reaches only the root namespace,
and whatever relays the test runs there. Everything made is removed by ``close``, also
after a failure. Needs root and a kernel that allows namespaces: ``unavailable`` says why
not where they cannot be made.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or ``None`` if they can."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"blprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace: {exc}"
    _ip("netns", "del", name)
    return None


class Lan:
    def __init__(self) -> None:
        # Names short enough for interfaces (15 characters), unique among concurrent tests.
        self.tag = f"{os.getpid() % 100000:05d}{random.randrange(100):02d}"
        self.subnet = f"10.{random.randrange(100, 250)}.{random.randrange(256)}"
        self.bridge = f"blb{self.tag}"
        self.gateway_ip = f"{self.subnet}.254"  # the root namespace's side
        self.machines: dict[str, str] = {}  # name -> its namespace
        self._links: list[str] = []
        self._next = 1
        _ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _namespace(self, name: str) -> str:
        ns = f"bl{self.tag}{name}"
        _ip("netns", "add", ns)
        self.machines[name] = ns
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def add(self, name: str) -> str:
        """A machine on the LAN; its address."""
        ns = self._namespace(name)
        address = f"{self.subnet}.{self._next}"
        outside, inside = f"blv{self.tag}{self._next}", "eth0"
        self._next += 1
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
        self._links.append(outside)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        return address

    def isolated(self, name: str, subnet: str) -> tuple[str, str]:
        """A machine on a link of its own to the root namespace (``subnet`` like
        ``10.9.9``): it can reach nothing but the root's side. Its address, the root's."""
        ns = self._namespace(name)
        outside = f"bli{self.tag}{len(self._links)}"
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._links.append(outside)
        _ip("addr", "add", f"{subnet}.254/24", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", ns, "addr", "add", f"{subnet}.1/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return f"{subnet}.1", f"{subnet}.254"

    def behind_router(self, name: str, subnet: str) -> tuple[str, str]:
        """A machine on a link of its own (``subnet`` like ``10.9.9``) to a router machine
        ``<name>-gw`` on the LAN, which forwards between the two; every LAN machine added so
        far routes ``subnet`` through it. Its address, and the router's on the LAN."""
        router_ip = self.add(f"{name}gw")
        router, ns = self.machines[f"{name}gw"], self._namespace(name)
        _ip(
            "-n",
            router,
            "link",
            "add",
            "inside",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        _ip("-n", router, "addr", "add", f"{subnet}.254/24", "dev", "inside")
        _ip("-n", router, "link", "set", "inside", "up")
        _ip("-n", ns, "addr", "add", f"{subnet}.1/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "add", "default", "via", f"{subnet}.254")
        subprocess.run(  # this namespace's own setting, not the machine's
            [*self.run_in(f"{name}gw"), "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        for other, other_ns in self.machines.items():
            if other not in (name, f"{name}gw"):
                _ip("-n", other_ns, "route", "add", f"{subnet}.0/24", "via", router_ip)
        return f"{subnet}.1", router_ip

    def run_in(self, name: str) -> list[str]:
        """The command prefix that runs a program on machine ``name``."""
        return ["ip", "netns", "exec", self.machines[name]]

    def close(self) -> None:
        for ns in self.machines.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        for link in reversed(self._links):  # veths in a deleted namespace are gone already
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)


@contextmanager
def lan() -> Iterator[Lan]:
    made = Lan()
    try:
        yield made
    finally:
        made.close()
