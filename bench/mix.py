"""Who calls whom in bench.run: many sources and contacts, as real phones each have their own address.

SIPp sends every call from one socket unless told otherwise, and the router keeps its answers by
the facts the cfg passes it, the source address and port among them: with one socket, every call
after the warm-up replayed an answer kept from it.  Here the calls come from several source
addresses (one SIPp caller each, at its share of the step's rate), each call from its own socket
(SIPp ``-t un``: a new source port per call), from many caller users (an injection file per caller:
``caller;callee``), to several callee phones (one SIPp callee each, on its own port) with several
users registered at each.  REGISTERs the same: many users from the same addresses, a socket each.

Everything here is plain data: which lines each SIPp gets, and so how many calls each callee phone
answers (its ``-m``).  SIPp takes an injection file's lines in order (SEQUENTIAL) and starts over
at its end, one line per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

#: The callers' source addresses: loopback addresses, which Linux binds without configuration.
#: bench/gateway.ini trusts each of them (a trunk's, or a phone exempt from digest auth).
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
#: A registered callee's Contact host: a name, not an IP, so nathelper's private-contact test
#: (which counts 127.0.0.0/8 as private) leaves it a plain SIP phone, as before.
CALLEE_HOST = "localhost"


def split(total: int, parts: int) -> List[int]:
    """``total`` in ``parts`` shares that differ by one at most, the larger first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass(frozen=True)
class Mix:
    addresses: Tuple[str, ...] = ADDRESSES
    """Source addresses of the callers and of the REGISTERing phones: one SIPp each."""
    socket_per_call: bool = True
    """SIPp ``-t un`` (a new socket, so a new source port, per call or REGISTER) or ``-t u1`` (one)."""
    caller_users: int = 200
    callee_phones: int = 4
    """SIPp callees, each on its own port: where the replies come from."""
    users_per_phone: int = 4
    register_users: int = 1000

    @property
    def transport(self) -> str:
        return "un" if self.socket_per_call else "u1"

    def shares(self, total: int) -> List[int]:
        """Calls (or REGISTERs) per source address."""
        return split(total, len(self.addresses))

    def callee_users(self) -> List[Tuple[str, int]]:
        """(user, the phone it is registered at) of every callee user."""
        count = self.callee_phones * self.users_per_phone
        return [(f"callee{u}", u % self.callee_phones) for u in range(count)]

    def caller_lines(self, source: int) -> List[Tuple[str, str]]:
        """The (caller user, callee user) lines of the caller at ``addresses[source]``: its own caller
        users (none shared with another address), calling every callee user in turn."""
        callees = self.callee_users()
        owned = range(source, self.caller_users, len(self.addresses))
        return [(f"caller{j}", callees[(i + source) % len(callees)][0]) for i, j in enumerate(owned)]

    def callee_load(self, total: int) -> List[int]:
        """Calls each callee phone gets in a step of ``total`` calls (its SIPp's ``-m``)."""
        phone_of = dict(self.callee_users())
        load = [0] * self.callee_phones
        for source, share in enumerate(self.shares(total)):
            lines = self.caller_lines(source)
            for i in range(share):
                load[phone_of[lines[i % len(lines)][1]]] += 1
        return load

    def register_lines(self, source: int) -> List[Tuple[str, str, int]]:
        """(user, Contact host, Contact port) of the REGISTERing users at ``addresses[source]``: each user
        always from the same address, each with its own Contact."""
        owned = range(source, self.register_users, len(self.addresses))
        return [(f"r{j}", CALLEE_HOST, 20000 + j) for j in owned]

    def describe(self) -> str:
        first, last = self.addresses[0], self.addresses[-1]
        where = first if len(self.addresses) == 1 else f"{first}..{last}"
        sockets = (
            "one UDP socket per call (SIPp -t un: a new source port each call)"
            if self.socket_per_call
            else "one UDP socket per address (SIPp -t u1: every call from the same port)"
        )
        contacts = self.callee_phones * self.users_per_phone
        return (
            f"callers: {len(self.addresses)} source address{'es' if len(self.addresses) > 1 else ''} ({where}),"
            f" {sockets}, {self.caller_users} caller users; callees: {self.callee_phones} phones (each its own"
            f" port on 127.0.0.1) with {self.users_per_phone} users registered at each ({contacts} contacts);"
            f" REGISTER: {self.register_users} users from the same addresses, each with its own Contact"
        )
