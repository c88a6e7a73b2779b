"""Hosts of a LAN on this one machine, for tests of what crosses hosts (addresses, discovery,
transfers): a network namespace per host, each with one interface on a bridge. The bridge
sits in a namespace of its own, out of reach of Docker's iptables rules (which drop what a
bridge of the root namespace forwards, multicast included). Every address is private to
these namespaces; nothing leaves them.

A host also gets a home of its own (HOME, XDG_DATA_HOME, XDG_CONFIG_HOME), so that what runs
on it finds its default data dir as on a machine of its own, as the README says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.harness import node_command

SUBNET = "10.77.0"


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian's iproute2)"
    probe = f"vcprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str  # on the LAN
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
        }

    @property
    def data_dir(self) -> Path:
        """Where a daemon on this host keeps its state when told nothing else."""
        return self.home / "data" / "vcnode"

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def run(
        self, *args: str, timeout: float = 60, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`vcnode ARGS` on this host, as its user would type it."""
        return subprocess.run(
            [*self.prefix, *node_command(*args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            env={**os.environ, **self.env},
        )


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@contextmanager
def lan(root: Path, hosts: int) -> Iterator[list[Host]]:
    """`hosts` hosts on one bridge, at SUBNET.1, SUBNET.2, ...; all gone afterwards."""
    tag = uuid.uuid4().hex[:6]  # interface names hold 15 characters at most
    switch = f"vc{tag}sw"
    made = [switch]
    try:
        _ip("netns", "add", switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        members = []
        for index in range(hosts):
            namespace = f"vc{tag}h{index}"
            _ip("netns", "add", namespace)
            made.append(namespace)
            inside, outside = f"vc{tag}i{index}", f"vc{tag}o{index}"
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("link", "set", outside, "netns", switch)
            _ip("-n", switch, "link", "set", outside, "master", "br0", "up")
            address = f"{SUBNET}.{index + 1}"
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "link", "set", inside, "name", "eth0")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            home = root / f"host{index}"
            home.mkdir(parents=True)
            members.append(Host(namespace, address, home))
        yield members
    finally:
        for namespace in reversed(made):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
