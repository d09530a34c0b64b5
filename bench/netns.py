"""Hosts on one machine: network namespaces joined to it by veth pairs, and a
private PostgreSQL server that listens on the machine's end of each pair, so a
process run "on" a host reaches Postgres over that host's own link and address,
as a separate machine would. Each host also gets a hostname of its own (a UTS
namespace), so worker names (host/pid) tell the hosts apart.

Used by the multi-host figure (bench/hosts.py) and its correctness test
(tests/test_hosts.py). Needs root and the ``ip`` command (iproute2). Every
name carries ``pgjh-<pid>``, so parallel runs never collide and a run killed
before its clean-up is cleaned by the next one (its pid is gone)."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.servers import PrivateServer

PREFIX = "pgjh"
# Subnets tried for a run: a /24 of 10.200.0.0/13 that no interface uses.
_POOL = ipaddress.IPv4Network("10.200.0.0/13")


class NetnsError(RuntimeError):
    """The namespaces could not be made (not root, no ``ip``, no permission)."""


@dataclasses.dataclass(frozen=True)
class Host:
    namespace: str
    hostname: str
    address: str  # the host's own address, inside its namespace
    server_address: str  # the machine's end of its veth: where it reaches Postgres
    veth: str  # the machine's end, by name

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host: in its network namespace, under its
        hostname. ``ip netns exec``, ``unshare`` and ``sh`` all exec, so the
        process started is ``argv`` itself (its pid, its session)."""
        return [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname,
            *argv,
        ]  # fmt: skip

    def dsn(self, server: PrivateServer, dbname: str = "postgres") -> str:
        return f"host={self.server_address} port={server.port} user=postgres dbname={dbname}"


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing (Debian: iproute2, util-linux)"
    return None


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_interface(a).network
            for a in re.findall(r"inet (\S+)", _ip("-4", "-o", "addr"))]
    subnets: list[ipaddress.IPv4Network] = list(_POOL.subnets(new_prefix=24))
    for net in random.sample(subnets, 64):
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError("no free /24 in 10.200.0.0/13")


def clean_stale() -> None:
    """Removes namespaces and links left by runs whose process is gone (kill -9)."""
    for name, pid in re.findall(rf"^({PREFIX}-(\d+)-\d+)", _ip("netns", "list"), re.M):
        if not Path(f"/proc/{pid}").exists():
            _ip("netns", "delete", name, check=False)
    for name, pid in re.findall(rf"^\d+: ({PREFIX}(\d+)h\d+)[@:]", _ip("-o", "link"), re.M):
        if not Path(f"/proc/{pid}").exists():
            _ip("link", "delete", name, check=False)


@contextlib.contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """``count`` hosts, removed afterwards whatever happens (an exception,
    Ctrl-C). Raises NetnsError when they cannot be made."""
    reason = unavailable()
    if reason:
        raise NetnsError(reason)
    clean_stale()
    pid = os.getpid()
    subnet = _free_subnet()
    made: list[Host] = []
    try:
        for i in range(count):
            base = subnet.network_address + 4 * i  # a /30 per host
            host = Host(
                namespace=f"{PREFIX}-{pid}-{i}", hostname=f"{PREFIX}-host{chr(65 + i)}",
                address=str(base + 2), server_address=str(base + 1),
                veth=f"{PREFIX}{pid}h{i}",
            )
            made.append(host)
            _make(host)
        yield made
    finally:
        for host in made:
            _ip("netns", "delete", host.namespace, check=False)
            _ip("link", "delete", host.veth, check=False)  # gone with its peer, normally


def _make(host: Host) -> None:
    peer = f"{host.veth}p"
    _ip("netns", "add", host.namespace)
    _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
    _ip("link", "set", peer, "netns", host.namespace)
    _ip("addr", "add", f"{host.server_address}/30", "dev", host.veth)
    _ip("link", "set", host.veth, "up")
    _ip("-n", host.namespace, "addr", "add", f"{host.address}/30", "dev", peer)
    _ip("-n", host.namespace, "link", "set", peer, "up")
    _ip("-n", host.namespace, "link", "set", "lo", "up")


@contextlib.contextmanager
def server_for(
    hosts: Sequence[Host], settings: dict[str, str] | None = None
) -> Iterator[PrivateServer]:
    """A private PostgreSQL server (initdb'd for the block, never the machine's
    shared one) listening on 127.0.0.1 and on every host's server address,
    trusting connections from those addresses; ``settings`` go in its
    postgresql.conf (last wins)."""
    server = PrivateServer(Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-pg-")))
    try:
        server.init()
        listen = ",".join(["127.0.0.1", *(h.server_address for h in hosts)])
        with (server.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '{listen}'\nmax_connections = 100\n")
            conf.writelines(f"{name} = '{value}'\n" for name, value in (settings or {}).items())
        with (server.pgdata / "pg_hba.conf").open("a") as hba:
            for h in hosts:
                hba.write(f"host all all {h.address}/32 trust\n")
        server.start()
        yield server
    finally:
        server.destroy()
