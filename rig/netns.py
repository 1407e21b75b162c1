"""A test network of Linux network namespaces: a gateway on a public address, sites behind real NAT.

Made with ``ip netns``, veth pairs, a bridge and iptables NAT, all inside namespaces this
module creates (named ``<tag>-<role>``); nothing touches the machine's own interfaces or
routes, and ``close()`` deletes every namespace it made (which deletes their interfaces).
Addresses are documentation ranges on the "Internet" (198.51.100.0/24, 203.0.113.0/24, RFC
5737) and private ranges only inside the sites::

                      wan (a bridge: 198.51.100.1, 203.0.113.1, forwards between them)
        +--------------+-------------+--------------+---------------+---------------+
        gw             pub           natA            natB            edge
    198.51.100.10   203.0.113.20  203.0.113.11     203.0.113.12    198.51.100.11
    a gateway on    a SIP phone   MASQUERADE       MASQUERADE      1:1 NAT (DNAT and
    the public      without NAT   (keeps ports     --random-fully  SNAT), as clouds
    address                       where it can)    (symmetric)     give a host
                                   192.168.1.1      192.168.2.1     10.0.0.1
                                     siteA            siteB         cloud: a gateway
                                  192.168.1.10-14  192.168.2.10-14  on 10.0.0.10 only

    and on the bridge too, dual: a dual-homed gateway, 198.51.100.12 and 10.1.0.10 on a private
    network with pbx (10.1.0.20), which has no route to anywhere else.

The NAT namespaces forget a UDP mapping after ``udp_timeout`` seconds without traffic
(conntrack's timeouts, per namespace), so a registration behind them stays reachable only
while something keeps the mapping alive.

A process runs inside a namespace through ``ip netns exec`` (``command``), which execs the
program: its pid is the program's, and it is stopped by that pid.  The test process itself
opens sockets inside a namespace with ``entered``: ``setns(2)`` moves the calling thread only,
a socket keeps the namespace it was made in, and a thread started meanwhile is born in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

#: Each site's LAN and its NAT's public address; hosts of a site take .10 upwards.
SITES = {
    "siteA": ("192.168.1", "203.0.113.11", "natA", False),
    "siteB": ("192.168.2", "203.0.113.12", "natB", True),  # symmetric: --random-fully
}
GATEWAY = "198.51.100.10"
#: The gateway host behind a 1:1 NAT: its own (private) address, and the public one the NAT maps to it.
CLOUD_PRIVATE = "10.0.0.10"
CLOUD_PUBLIC = "198.51.100.11"
#: The dual-homed gateway: its public address, its address on the private network, and the PBX there.
DUAL_PUBLIC = "198.51.100.12"
DUAL_PRIVATE = "10.1.0.10"
PBX = "10.1.0.20"
PUBLIC_PHONE = "203.0.113.20"
HOSTS_PER_SITE = 5


def unavailable() -> Optional[str]:
    """Why this machine cannot make the network (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for program in ("ip", "iptables"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(name: Optional[str]) -> Iterator[None]:
    """This thread in namespace ``name`` for the block (nothing when None): sockets made here belong to it."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(f"{NETNS_DIR}/{name}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's own namespace failed")
    finally:
        os.close(own)


def command(name: Optional[str], argv: Sequence[str]) -> List[str]:
    """``argv`` run inside namespace ``name`` (as it is when None)."""
    return [*argv] if name is None else ["ip", "netns", "exec", name, *argv]


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


@dataclass
class Network:
    """The namespaces above; ``Network.make(tag)``, then ``close()`` (also on failure)."""

    tag: str
    udp_timeout: int = 20
    made: List[str] = field(default_factory=list)
    hosts: Dict[str, List[str]] = field(default_factory=dict)
    """Each site's host addresses, in the order ``host()`` hands them out."""

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    @classmethod
    def make(cls, tag: str, udp_timeout: int = 20) -> Network:
        net = cls(tag, udp_timeout)
        try:
            net._build()
        except BaseException:
            net.close()
            raise
        return net

    def _add(self, role: str) -> str:
        name = self.ns(role)
        _run(["ip", "netns", "add", name])
        self.made.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def _wire(self, a: str, a_if: str, b: str, b_if: str) -> None:
        """A veth pair made straight into its two namespaces (never in the machine's own)."""
        _run(["ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b])
        _run(["ip", "-n", a, "link", "set", a_if, "up"])
        _run(["ip", "-n", b, "link", "set", b_if, "up"])

    def _sysctl(self, name: str, *settings: str) -> None:
        for setting in settings:
            _run(["ip", "netns", "exec", name, "sysctl", "-qw", setting])

    def _build(self) -> None:
        wan = self._add("wan")
        _run(["ip", "-n", wan, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", wan, "link", "set", "br0", "up"])
        for cidr in ("198.51.100.1/24", "203.0.113.1/24"):
            _run(["ip", "-n", wan, "addr", "add", cidr, "dev", "br0"])
        self._sysctl(wan, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0")

        def public(role: str, address: str, router: str) -> str:
            name = self._add(role)
            port = f"p-{role}"[:15]
            self._wire(name, "eth0", wan, port)
            _run(["ip", "-n", wan, "link", "set", port, "master", "br0"])
            _run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"])
            _run(["ip", "-n", name, "route", "add", "default", "via", router])
            return name

        public("gw", GATEWAY, "198.51.100.1")
        public("pub", PUBLIC_PHONE, "203.0.113.1")
        edge = public("edge", CLOUD_PUBLIC, "198.51.100.1")
        cloud = self._add("cloud")
        self._wire(edge, "lan0", cloud, "eth0")
        _run(["ip", "-n", edge, "addr", "add", "10.0.0.1/24", "dev", "lan0"])
        _run(["ip", "-n", cloud, "addr", "add", f"{CLOUD_PRIVATE}/24", "dev", "eth0"])
        _run(["ip", "-n", cloud, "route", "add", "default", "via", "10.0.0.1"])
        self._sysctl(edge, "net.ipv4.ip_forward=1")
        dual = public("dual", DUAL_PUBLIC, "198.51.100.1")
        pbx = self._add("pbx")
        self._wire(dual, "eth1", pbx, "eth0")
        _run(["ip", "-n", dual, "addr", "add", f"{DUAL_PRIVATE}/24", "dev", "eth1"])
        _run(["ip", "-n", pbx, "addr", "add", f"{PBX}/24", "dev", "eth0"])  # and no route beyond
        for rule in (
            ["PREROUTING", "-d", CLOUD_PUBLIC, "-j", "DNAT", "--to-destination", CLOUD_PRIVATE],
            ["POSTROUTING", "-s", CLOUD_PRIVATE, "-o", "eth0", "-j", "SNAT", "--to-source", CLOUD_PUBLIC],
        ):
            _run(["ip", "netns", "exec", edge, "iptables", "-t", "nat", "-A", *rule])
        for site, (lan, outside, nat_role, symmetric) in SITES.items():
            nat = public(nat_role, outside, "203.0.113.1")
            inside = self._add(site)
            self._wire(nat, "lan0", inside, "eth0")
            _run(["ip", "-n", nat, "addr", "add", f"{lan}.1/24", "dev", "lan0"])
            hosts = [f"{lan}.{10 + n}" for n in range(HOSTS_PER_SITE)]
            for host in hosts:
                _run(["ip", "-n", inside, "addr", "add", f"{host}/24", "dev", "eth0"])
            _run(["ip", "-n", inside, "route", "add", "default", "via", f"{lan}.1"])
            self.hosts[site] = hosts
            masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"]
            if symmetric:
                masquerade.append("--random-fully")
            _run(["ip", "netns", "exec", nat, *masquerade])
            # conntrack's sysctls exist in a namespace once a NAT rule needs it
            self._sysctl(
                nat,
                "net.ipv4.ip_forward=1",
                f"net.netfilter.nf_conntrack_udp_timeout={self.udp_timeout}",
                f"net.netfilter.nf_conntrack_udp_timeout_stream={self.udp_timeout}",
            )

    def counter(self, where: str, host: str, port: int, last: Optional[int] = None) -> Callable[[], int]:
        """Count the UDP packets delivered to ``host:port`` (to ``last``) in namespace ``where`` (after any
        NAT): an iptables rule of its INPUT chain, read back with its counters."""
        name = self.ns(where)
        ports = f"{port}:{last}" if last is not None else str(port)
        rule = ["INPUT", "-d", host, "-p", "udp", "--dport", ports, "-m", "comment", "--comment",
                f"to {host}:{port}"]  # fmt: skip
        _run(["ip", "netns", "exec", name, "iptables", "-A", *rule])

        def read() -> int:
            listing = subprocess.run(
                ["ip", "netns", "exec", name, "iptables", "-L", "INPUT", "-n", "-v", "-x"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout  # fmt: skip
            for line in listing.splitlines():
                if f"/* to {host}:{port} */" in line:
                    return int(line.split()[0])
            raise RuntimeError(f"no counter for {host}:{port} in {name}:\n{listing}")

        return read

    def close(self) -> None:
        """Delete every namespace made (their interfaces go with them).  Processes still inside keep
        theirs alive: stop them first."""
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
        self.made.clear()
