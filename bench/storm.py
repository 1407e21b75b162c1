"""Re-registration storm after a restart: the REGISTER rate over time, and no failed registration.

    OPENSIPS_BIN=/opt/opensips-3.6.8/sbin/opensips python3 -m bench.storm          # 1,000 clients, ~3 min
    OPENSIPS_BIN=... python3 -m bench.storm --clients 200 --after 40 --deviation 0  # without the spread

A real OpenSIPS with the repository's cfg (rig/gateway.py, loopback) and N clients in one asyncio
loop, half browsers over WSS that behave as JsSIP does, half SIP phones over UDP:

- a browser asks for ``--browser-expires`` (40 s: below max_expires, as JsSIP's 600 s is below the
  cfg's 3600 s), refreshes a registration of E seconds after a random time between E/2
  and E - 32 (E > 64) or after E - 5 (JsSIP's Registrator), and when its WebSocket closes it
  reconnects and registers again with the same Contact (JsSIP's Transport: attempt n after
  floor(random * 2^n + 1) s, at least 2 and at most 30);
- a phone asks for 3600 s and refreshes at half its registration, from its own UDP port.

All clients send from 127.0.0.1, a trusted source of this run's gateway.ini (pike would count
them as one flooding source).  The timers are scaled down so that a run takes minutes: the
registrar grants at most
``--max-expires`` (60 s) with a random +/- ``--deviation`` (20 s; ``expires_max_deviation``,
0: none; clamped to max_expires), and ``tcp_connection_lifetime`` is above it (the cfg's rule,
README "Restarts").
Everyone registers, spread over the first seconds; the run waits until each client has
refreshed once (their refreshes spread), restarts OpenSIPS (graceful), and counts the
REGISTERs sent per second for ``--after`` seconds.  Registrations restored from the database
keep the phones reachable: only the browsers, whose WebSockets went with OpenSIPS, come back at
once.  Without the deviation every browser that came back in the same second refreshes in the
same second again, one lifetime later; with it, that second wave spreads.

Printed: the REGISTERs per second after the restart (and the peak), replies that were not 200
and REGISTERs that got no answer within 5 s (failed registrations: the target is 0), and the
bindings in usrloc before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import ssl
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from rig import mi
from rig.gateway import DEFAULT_SETTINGS, Gateway, find_opensips

REPLY_WAIT = 5.0


@dataclass
class Tally:
    """REGISTERs sent per whole second since ``zero``, and how each ended."""

    zero: float = field(default_factory=time.monotonic)
    sent: Counter[int] = field(default_factory=Counter)
    ok: int = 0
    by_client: Counter[str] = field(default_factory=Counter)
    """200s per client (user name)."""
    failed: List[str] = field(default_factory=list)

    def register_sent(self) -> None:
        self.sent[int(time.monotonic() - self.zero)] += 1


def register_text(user: str, contact: str, via: str, call_id: str, cseq: int, expires: int) -> bytes:
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: {via};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <{contact}>;expires={expires}\r\n"
        f"Expires: {expires}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def granted(reply: bytes, contact: str) -> Optional[int]:
    """The expires the 200 gives our Contact (None: not a 200)."""
    text = reply.decode("utf-8", "replace")
    if not text.startswith("SIP/2.0 200"):
        return None
    for line in text.split("\r\n"):
        if line.lower().startswith(("contact:", "m:")) and contact in line:
            for param in line.split(">", 1)[-1].split(";"):
                key, _, value = param.strip().partition("=")
                if key.lower() == "expires" and value.strip().isdigit():
                    return int(value)
    return None


def first_line(message: bytes) -> str:
    return message.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def jssip_recovery(attempt: int) -> float:
    """JsSIP's Transport._reconnect: seconds before connection attempt ``attempt`` after a close."""
    return float(min(max(int(random.random() * 2**attempt + 1), 2), 30))


def jssip_refresh(expires: int) -> float:
    """JsSIP's Registrator: when it refreshes a registration of ``expires`` seconds."""
    if expires > 64:
        return expires / 2 + random.uniform(0, expires / 2 - 32)
    return max(expires - 5, 1)


class WsBrowser:
    """A JsSIP-like client over WSS: one WebSocket, REGISTER refreshes, reconnects 2 s after a close."""

    def __init__(self, index: int, port: int, tally: Tally, stop: asyncio.Event, asks: int) -> None:
        self.user = f"storm-web{index}"
        self.asks = asks
        host = f"{uuid.uuid4().hex[:10]}.invalid"
        self.contact = f"sip:{uuid.uuid4().hex[:8]}@{host};transport=ws"
        self.via = f"SIP/2.0/WSS {host}"
        self.call_id = uuid.uuid4().hex
        self.cseq = 0
        self.port = port
        self.tally = tally
        self.stop = stop
        self.registered_once = asyncio.Event()
        self.refreshed = asyncio.Event()

    async def run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.attempts = 0
        while not self.stop.is_set():
            try:
                await self._session()
            except (OSError, asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
                pass
            if not self.stop.is_set():
                await asyncio.sleep(jssip_recovery(self.attempts + 1))
                self.attempts += 1

    async def _session(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port, ssl=context), 10)
        try:
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            writer.write(
                (
                    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
                    f"Origin: https://storm.example\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError("no WebSocket")
            self.attempts = 0  # JsSIP counts its recovery attempts from the last connection
            while not self.stop.is_set():
                expires = await self._register(reader, writer)
                if expires is None:
                    return
                if self.registered_once.is_set():
                    self.refreshed.set()
                self.registered_once.set()
                try:  # until the refresh is due, or the connection closes
                    await asyncio.wait_for(reader.read(65536), jssip_refresh(expires))
                    return  # the server closed it (or sent something we do not expect)
                except asyncio.TimeoutError:
                    continue
        finally:
            writer.close()

    async def _register(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Optional[int]:
        self.cseq += 1
        payload = register_text(self.user, self.contact, self.via, self.call_id, self.cseq, self.asks)
        mask = os.urandom(4)
        head = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask
        writer.write(head + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        self.tally.register_sent()
        try:
            first = await asyncio.wait_for(reader.readexactly(2), REPLY_WAIT)
            length = first[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            body = await asyncio.wait_for(reader.readexactly(length), REPLY_WAIT)
        except asyncio.TimeoutError:
            self.tally.failed.append(f"{self.user}: no answer to REGISTER {self.cseq}")
            return None
        expires = granted(body, self.contact)
        if expires is None:
            self.tally.failed.append(f"{self.user}: {first_line(body)}")
            return None
        self.tally.ok += 1
        self.tally.by_client[self.user] += 1
        return expires


class UdpPhone(asyncio.DatagramProtocol):
    """A SIP phone over UDP: asks for 3600 s, refreshes at half of what it got, retransmits as RFC 3261."""

    def __init__(self, index: int, gateway: Tuple[str, int], tally: Tally, stop: asyncio.Event) -> None:
        self.user = f"storm-sip{index}"
        self.gateway = gateway
        self.tally = tally
        self.stop = stop
        self.call_id = uuid.uuid4().hex
        self.cseq = 0
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.registered_once = asyncio.Event()
        self.refreshed = asyncio.Event()
        self.contact = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's
        host, port = transport.get_extra_info("sockname")[:2]
        self.contact = f"sip:{self.user}@{host}:{port}"
        self.via = f"SIP/2.0/UDP {host}:{port}"

    def datagram_received(self, data: bytes, addr: Tuple[str, int]) -> None:
        if data.startswith(b"SIP/2.0 "):
            self.replies.put_nowait(data)
        elif self.transport is not None and data.startswith(b"OPTIONS "):
            pass  # nathelper's pings are off on the rig

    async def run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while not self.stop.is_set():
            expires = await self._register()
            if expires is None:
                return
            if self.registered_once.is_set():
                self.refreshed.set()
            self.registered_once.set()
            try:
                await asyncio.wait_for(self.stop.wait(), expires / 2)
            except asyncio.TimeoutError:
                pass

    async def _register(self) -> Optional[int]:
        assert self.transport is not None
        self.cseq += 1
        data = register_text(self.user, self.contact, self.via, self.call_id, self.cseq, 3600)
        self.tally.register_sent()
        waited, wait = 0.0, 0.5
        while waited < REPLY_WAIT:
            self.transport.sendto(data, self.gateway)
            try:
                reply = await asyncio.wait_for(self.replies.get(), wait)
            except asyncio.TimeoutError:
                waited, wait = waited + wait, min(wait * 2, 4.0)
                continue
            if reply.startswith(b"SIP/2.0 1"):
                continue
            expires = granted(reply, self.contact)
            if expires is None:
                self.tally.failed.append(f"{self.user}: {first_line(reply)}")
                return None
            self.tally.ok += 1
            self.tally.by_client[self.user] += 1
            return expires
        self.tally.failed.append(f"{self.user}: no answer to REGISTER {self.cseq}")
        return None


def bindings(gateway: Gateway) -> Dict[str, int]:
    table = mi.contacts(gateway.mi_url)
    return {
        "browsers": sum(1 for u in table if u.startswith("storm-web")),
        "phones": sum(1 for u in table if u.startswith("storm-sip")),
    }


async def storm(
    gateway: Gateway, clients: int, after: float, spread: float, asks: int
) -> Tuple[Tally, Dict[str, Dict[str, int]]]:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    browsers = [WsBrowser(i, gateway.ports.wss, tally, stop, asks) for i in range(clients // 2)]
    phones: List[UdpPhone] = []
    for i in range(clients - len(browsers)):
        phone = UdpPhone(i, ("127.0.0.1", gateway.ports.sip), tally, stop)
        await loop.create_datagram_endpoint(lambda phone=phone: phone, local_addr=("127.0.0.1", 0))  # type: ignore[misc]
        phones.append(phone)
    everyone: Sequence[WsBrowser | UdpPhone] = [*browsers, *phones]
    tasks = [asyncio.create_task(c.run(random.uniform(0, spread))) for c in everyone]
    try:
        try:
            await asyncio.wait_for(asyncio.gather(*(c.registered_once.wait() for c in everyone)), spread + 60)
        except asyncio.TimeoutError:
            missing = [c.user for c in everyone if not c.registered_once.is_set()]
            raise SystemExit(
                f"{len(missing)} of {len(everyone)} clients never registered before the restart "
                f"(e.g. {missing[:5]}); failures: {tally.failed[:10]}"
            ) from None
        await asyncio.wait_for(asyncio.gather(*(c.refreshed.wait() for c in browsers)), 200)
        seen = {"before": bindings(gateway)}
        counts = Counter(tally.by_client)
        await asyncio.to_thread(gateway.restart_opensips)
        tally.zero, tally.sent = time.monotonic(), Counter()
        await asyncio.sleep(after)
        seen["after"] = bindings(gateway)
        back = sum(1 for b in browsers if tally.by_client[b.user] > counts[b.user])
        seen["registered again"] = {"browsers": back}
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for phone in phones:
            if phone.transport is not None:
                phone.transport.close()
    return tally, seen


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--clients", type=int, default=1000, help="half browsers over WSS, half phones over UDP")
    parser.add_argument("--max-expires", type=int, default=60)
    parser.add_argument("--deviation", type=int, default=20, help="registrar expires_max_deviation (0: none)")
    parser.add_argument("--browser-expires", type=int, default=40, help="what each browser asks for")
    parser.add_argument("--after", type=float, default=90.0, help="seconds counted after the restart")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which everyone registers first")
    args = parser.parse_args(argv)
    found = find_opensips()
    if not found.found:
        print("no OpenSIPS: set OPENSIPS_BIN", *found.problems, file=sys.stderr)
        return 2
    binary = found.found[0]
    lifetime = args.max_expires + 5  # the deviation is clamped to max_expires
    extra = "\n".join(
        [
            f"tcp_connection_lifetime = {lifetime}",
            f'modparam("registrar", "max_expires", {args.max_expires})',
            f'modparam("registrar", "min_expires", {min(args.max_expires, 10)})',
            f'modparam("registrar", "expires_max_deviation", {args.deviation})',
            'modparam("usrloc", "timer_interval", 2)',
        ]
    )
    started = time.monotonic()
    # every client sends from 127.0.0.1: a trusted source, or pike would take the storm for a flood
    settings = DEFAULT_SETTINGS.replace("trusted_sources =", "trusted_sources = 127.0.0.1")
    with Gateway.start(binary, folder=None, settings=settings, extra_params=extra) as gateway:
        tally, seen = asyncio.run(storm(gateway, args.clients, args.after, args.spread, args.browser_expires))
    print(f"== re-registration storm: OpenSIPS {gateway.version}, {args.clients} clients "
          f"({args.clients // 2} browsers over WSS, {args.clients - args.clients // 2} phones over UDP)")  # fmt: skip
    took = time.monotonic() - started
    print(f"   registrar max_expires {args.max_expires} s, expires_max_deviation {args.deviation} s, "
          f"tcp_connection_lifetime {lifetime} s; graceful restart; {took:.0f} s all told")  # fmt: skip
    print(f"   bindings before the restart {seen['before']}, {args.after:.0f} s after {seen['after']};"
          f" registered again after the restart {seen['registered again']}")  # fmt: skip
    print("   REGISTERs sent per second after OpenSIPS accepted again (second: count):")
    seconds = range(int(args.after))
    line = []
    for second in seconds:
        line.append(f"{second:>3}:{tally.sent.get(second, 0):<4}")
        if len(line) == 10:
            print("   " + " ".join(line))
            line = []
    if line:
        print("   " + " ".join(line))
    peak = max(tally.sent.values(), default=0)
    print(f"   peak {peak}/s; REGISTERs answered 200: {tally.ok}; failed registrations: {len(tally.failed)}")
    for failure in tally.failed[:10]:
        print(f"     {failure}")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
