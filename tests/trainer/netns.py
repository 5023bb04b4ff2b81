"""Several "hosts" on this machine: Linux network namespaces joined by a veth pair, each with its own /etc/hosts.

Each host is a network namespace (``ip netns add``) holding one end of a veth pair renamed ``eth0`` (the name
SageMaker's resourceconfig.json gives as ``network_interface_name``), an address of a private /24 and ``lo``. A
process started with ``ip netns exec NS`` sees only that namespace's network, and sees
``/etc/netns/NS/hosts`` and ``/etc/netns/NS/resolv.conf`` as /etc/hosts and /etc/resolv.conf: ``ip netns exec``
"creat[es] a mount namespace and bind mount[s] all of the per network namespace configure files into their
traditional location in /etc" (man ip-netns, iproute2 6.1). The bind mount is of the file's inode, so names are
added later by appending to that file in place, never by replacing it.

resolv.conf names 127.0.0.1, where nothing listens inside the namespace: a name missing from the hosts file fails
at once instead of being asked of this machine's resolver, and no packet leaves the namespaces. Namespaces, links
and files are named after the test process's pid, so a crashed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")
"""Where ``ip netns add`` keeps the namespace's handle (man ip-netns)."""
SUBNET = "10.231.0"
"""The /24 inside the namespaces (RFC 1918); it exists on no interface of this machine's own namespace."""


def missing_requirement() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command is missing: apt-get install iproute2"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


@dataclass
class Host:
    name: str
    """The host's name in the job (algo-1, ...)."""
    namespace: str
    address: str

    @property
    def etc(self) -> Path:
        return NETNS_ETC / self.namespace

    def publish(self, names: Mapping[str, str]) -> None:
        """Make ``names`` ({name: address}) resolvable inside this host, by appending to its hosts file in place."""
        text = "".join(f"{address} {name}\n" for name, address in names.items())
        with (self.etc / "hosts").open("a") as fh:  # one write: a lookup never sees half a line
            fh.write(text)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def pids(self) -> list[int]:
        result = subprocess.run(
            ["ip", "netns", "pids", self.namespace], capture_output=True, text=True, check=False, timeout=30
        )
        return [int(pid) for pid in result.stdout.split()]

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL every process in the namespace, as a host losing power would end them; wait until none is left."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


class Network:
    """Hosts named ``names``, each in its own namespace, all on one veth link (two hosts: one pair)."""

    def __init__(self, names: list[str], tag: str | None = None) -> None:
        if len(names) != 2:
            raise ValueError("one veth pair joins exactly two hosts")
        tag = tag or f"dc{os.getpid()}"
        self.tag = tag
        self.hosts = [
            Host(name=name, namespace=f"{tag}-{i + 1}", address=f"{SUBNET}.{i + 1}") for i, name in enumerate(names)
        ]

    def up(self, publish_all: bool = True) -> None:
        """Make the namespaces, link them, write each one's hosts file: its own name, and the others' names too
        when ``publish_all``."""
        a, b = self.hosts
        for host in self.hosts:
            _ip("netns", "add", host.namespace)
            host.etc.mkdir(parents=True, exist_ok=True)
            (host.etc / "hosts").write_text(f"127.0.0.1 localhost\n{host.address} {host.name}\n")
            (host.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        # Link names are at most 15 characters; each end is renamed eth0 inside its namespace.
        _ip(
            "link",
            "add",
            f"{self.tag}a",
            "netns",
            a.namespace,
            "type",
            "veth",
            "peer",
            "name",
            f"{self.tag}b",
            "netns",
            b.namespace,
        )
        for host, end in ((a, f"{self.tag}a"), (b, f"{self.tag}b")):
            _ip("-n", host.namespace, "link", "set", end, "name", "eth0")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        if publish_all:
            for host in self.hosts:
                host.publish({other.name: other.address for other in self.hosts if other is not host})

    def down(self) -> None:
        """Kill what runs inside, delete the namespaces (which deletes the veth pair) and their files; never raises,
        so that it can run after any failure, even of :meth:`up` half-way."""
        for host in self.hosts:
            if (NETNS_RUN / host.namespace).exists():
                host.kill()
                subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, check=False, timeout=30)
            shutil.rmtree(host.etc, ignore_errors=True)
        subprocess.run(["ip", "link", "del", f"{self.tag}a"], capture_output=True, check=False, timeout=30)
