"""Bring the gateway up on this machine: rtpengine + OpenSIPS with our cfg, and a JsSIP softphone page.

    python3 -m rig.up                       # loopback, a fresh self-signed certificate
    python3 -m rig.up --settings my/gateway.ini --policy my/policy.py   # with your rules
    python3 -m rig.up --host gw.example.org --cert fullchain.pem --key privkey.pem

It prints the softphone's address (open it in two browser tabs, register two
users, call one from the other), the SIP address for phones, and where the
logs are; Ctrl-C (or SIGTERM) stops OpenSIPS, rtpengine and the web server
by pid.  The OpenSIPS binary is the first of OPENSIPS_BIN, else `opensips`
on PATH.  Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from . import web
from .gateway import DEFAULT_SETTINGS, Gateway, find_opensips


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m rig.up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="the name browsers use for the gateway (alias, WSS URL)")
    parser.add_argument("--cert", type=Path, help="certificate (PEM, full chain) for --host; default: self-signed")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    parser.add_argument("--folder", type=Path, help="where the cfg, logs and page go (default: a new temp folder)")
    parser.add_argument("--web-port", type=int, default=0, help="port of the softphone page (default: any free one)")
    parser.add_argument("--settings", type=Path, help="your gateway.ini (default: loopback domains, no trunks)")
    parser.add_argument("--policy", type=Path, help="your policy.py (default: pyscripts/policy.py)")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    opensips = find_opensips()
    if opensips.problems:
        print("OPENSIPS_BIN names no executable: " + "; ".join(opensips.problems), file=sys.stderr)
        return 2
    binaries = opensips.found
    if not binaries:
        print("no OpenSIPS: set OPENSIPS_BIN=/path/to/sbin/opensips or put opensips on PATH", file=sys.stderr)
        return 2
    folder = args.folder or Path(tempfile.mkdtemp(prefix="gateway-up-"))
    folder.mkdir(parents=True, exist_ok=True)
    settings = DEFAULT_SETTINGS.replace("gateway.local", f"gateway.local {args.host}".strip())
    env = {}
    if args.settings:  # OpenSIPS reads and watches the operator's own file: an edit routes the next call
        settings = args.settings.read_text()
        env["GATEWAY_SETTINGS"] = str(args.settings.resolve())
    if args.policy:
        env["GATEWAY_POLICY"] = str(args.policy.resolve())
    names = (args.host, "localhost", "gateway.local")
    certificate = (args.cert, args.key) if args.cert else None
    gateway = Gateway.start(
        binaries[0], folder=folder, settings=settings, host=args.host, names=names, certificate=certificate, env=env
    )
    server: Optional[web.Server] = None
    try:
        server = web.Server(web.site(folder / "web"), port=args.web_port)
        print(f"OpenSIPS {gateway.version} with opensips/opensips.cfg, logs in {folder}")
        print(
            f"  rules: {args.settings or folder / 'gateway.ini'} and"
            f" {args.policy or os.environ.get('GATEWAY_POLICY') or 'pyscripts/policy.py'}"
            " (changes taken as it runs, by each worker at its next request)"
        )
        print(f"  softphone: {server.url}?ws={gateway.wss_url}&domain={args.host}")
        print(f"  (plain ws: {gateway.ws_url})  SIP phones: udp/tcp {args.host}:{gateway.ports.sip}, "
              f"tls {args.host}:{gateway.ports.tls}")  # fmt: skip
        print(f"  MI: {gateway.mi_url}   stop with Ctrl-C")
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stop.wait(1.0):
            if not gateway.alive():
                print("OpenSIPS exited; see " + str(gateway.log_path), file=sys.stderr)
                return 1
        return 0
    finally:
        if server is not None:
            server.close()
        gateway.stop()


if __name__ == "__main__":
    sys.exit(main())
