"""Who calls whom in bench.run: many sources and contacts, as real phones each have their own address.

SIPp sends every call from one socket unless told otherwise: with one socket, every call after
the warm-up brought the router the same facts (a router that kept its answers by them, as it once
did, replayed one; it keeps none now, and a gateway with real phones never sees that).  Here the
calls come from several source
addresses (one SIPp caller each, at its share of the step's rate), each call from its own socket
(SIPp ``-t un``: a new source port per call), from many caller users (an injection file per caller:
``caller;callee``), to several callee phones (one SIPp callee each, on its own port) with several
users registered at each.  REGISTERs the same: many users from the same addresses, a socket each.

With the recipes active (``Mix(rules=True)``, bench.run ``--rules recipes``) some lines call numbers
instead of users, so that the traffic takes every rule of bench/recipes: one line in ten an
international number (the dial plan's ``00`` prefix: the international trunk, a SIPp callee of its
own, whose offers carry the rules' rtpengine flag), one in ten a national number (the dial plan's
regular expression: the national trunk, another SIPp callee), one in fifty a premium-rate number
(``[blocked]``: 403 at the gateway; the caller's scenario takes the 403 as the call's end, so such
a call is not a failed one), and 12 of the 200 callers (6 % of the calls) are in ``[media]
always_proxy`` (their calls take rtpengine in the sweep without media too).  Every call carries a
P-Preferred-Identity for the rules to remove and gets X-Caller-Kind (the callees check both).

Everything here is plain data: which lines each SIPp gets, and so how many calls each callee phone
answers (its ``-m``).  SIPp takes an injection file's lines in order (SEQUENTIAL) and starts over
at its end, one line per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

#: The callers' source addresses: loopback addresses, which Linux binds without configuration.
#: bench/gateway.ini trusts each of them (a trunk's, or a phone exempt from digest auth).
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
#: A registered callee's Contact host: a name, not an IP, so nathelper's private-contact test
#: (which counts 127.0.0.0/8 as private) leaves it a plain SIP phone, as before.
CALLEE_HOST = "localhost"
#: The trunks of bench/recipes/gateway.ini, each a SIPp callee after the phones (callee_load's order).
TRUNKS = ("national", "international")
#: What a line of the recipes' traffic calls, by its place in a caller's lines (every 10th, 50th).
INTERNATIONAL, NATIONAL, BLOCKED, USER = "international", "national", "blocked", "user"
#: The callers of bench/recipes/gateway.ini [media] always_proxy: caller j with (j // 4) % 20 == 0.
ALWAYS_PROXY = tuple(f"caller{j}" for j in range(200) if (j // 4) % 20 == 0)


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
    rules: bool = False
    """The traffic of bench/recipes (the module's docstring): numbers for the dial plan and the blocked range."""

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

    def line_kind(self, index: int) -> str:
        """What the ``index``-th line of a caller calls: a registered user, or (rules) a kind of number."""
        if not self.rules:
            return USER
        if index % 50 == 25:
            return BLOCKED
        return {3: INTERNATIONAL, 7: NATIONAL}.get(index % 10, USER)

    def caller_lines(self, source: int) -> List[Tuple[str, str]]:
        """The (caller user, callee) lines of the caller at ``addresses[source]``: its own caller users
        (none shared with another address), calling every callee user in turn; with the rules, some
        lines call numbers instead (line_kind)."""
        callees = self.callee_users()
        owned = range(source, self.caller_users, len(self.addresses))
        lines = []
        for i, j in enumerate(owned):
            kind = self.line_kind(i)
            number = {
                INTERNATIONAL: f"0049301234{j:03d}",  # "00": the international trunk
                NATIONAL: f"0301234{j:03d}",  # /^0[1-9][0-9]{5,}$/: the national trunk
                BLOCKED: f"0900123{j:03d}",  # "0900": blocked
            }.get(kind)
            lines.append((f"caller{j}", number or callees[(i + source) % len(callees)][0]))
        return lines

    def calls_by_kind(self, total: int) -> Dict[str, int]:
        """How many of a step's ``total`` calls go to each kind of line (line_kind), and how many of them
        come from always-proxied callers ("always_proxy")."""
        counted: Dict[str, int] = {}
        for source, share in enumerate(self.shares(total)):
            lines = self.caller_lines(source)
            for i in range(share):
                at = i % len(lines)
                kind = self.line_kind(at)
                counted[kind] = counted.get(kind, 0) + 1
                if self.rules and lines[at][0] in ALWAYS_PROXY:
                    counted["always_proxy"] = counted.get("always_proxy", 0) + 1
        return counted

    @property
    def trunks(self) -> Tuple[str, ...]:
        """The trunks the traffic calls (a SIPp callee each, after the phones)."""
        return TRUNKS if self.rules else ()

    def callee_load(self, total: int) -> List[int]:
        """Calls each callee phone, then each trunk, gets in a step of ``total`` calls (its SIPp's ``-m``)."""
        phone_of = dict(self.callee_users())
        load = [0] * (self.callee_phones + len(self.trunks))
        for source, share in enumerate(self.shares(total)):
            lines = self.caller_lines(source)
            for i in range(share):
                at = i % len(lines)
                kind = self.line_kind(at)
                if kind == USER:
                    load[phone_of[lines[at][1]]] += 1
                elif kind != BLOCKED:
                    load[self.callee_phones + self.trunks.index(kind)] += 1
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
        rules = ""
        if self.rules:
            rules = (
                "; with the recipes: of every 50 lines of a caller 5 call international numbers (dial plan '00':"
                " the international trunk, with the rules' rtpengine flag), 5 national numbers (its regular"
                " expression: the national trunk), 1 a blocked number (403), and 12 of the callers are always"
                " proxied (6 % of the calls); each trunk a SIPp callee of its own"
            )
        return (
            f"callers: {len(self.addresses)} source address{'es' if len(self.addresses) > 1 else ''} ({where}),"
            f" {sockets}, {self.caller_users} caller users; callees: {self.callee_phones} phones (each its own"
            f" port on 127.0.0.1) with {self.users_per_phone} users registered at each ({contacts} contacts);"
            f" REGISTER: {self.register_users} users from the same addresses, each with its own Contact{rules}"
        )
