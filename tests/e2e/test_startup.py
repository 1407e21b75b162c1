"""The real OpenSIPS accepts our cfg (with -C) and starts with it, the Python router loaded."""

from __future__ import annotations

import subprocess

from rig import mi, ng

from .conftest import Rig


def test_cfg_check_passes(gateway: Rig) -> None:
    gw = gateway.gw
    env = {"GATEWAY_SETTINGS": str(gw.folder / "gateway.ini"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [gw.binary, "-C", "-f", str(gw.folder / "opensips.cfg")], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config file ok" in result.stdout + result.stderr


def test_listens_on_every_transport_and_answers_mi(gateway: Rig) -> None:
    gw = gateway.gw
    assert gw.alive()
    assert mi.call(gw.mi_url, "version")["Server"].startswith(f"OpenSIPS ({gw.version}")
    log = gw.log()
    for proto, port in (("udp", gw.ports.sip), ("tcp", gw.ports.sip), ("tls", gw.ports.tls), ("ws", gw.ports.ws),
                        ("wss", gw.ports.wss)):  # fmt: skip
        assert f"{proto}: 127.0.0.1 [127.0.0.1]:{port}" in log


def test_rtpengine_answers_through_the_relay(gateway: Rig) -> None:
    assert ng.command(gateway.relay.address, {"command": "ping"})["result"] == "pong"


def test_wss_offers_tls12_and_up_only(gateway: Rig) -> None:
    """tls_method "[webrtc]TLSv1_2-" is taken: TLS 1.1 is refused, TLS 1.2 and 1.3 are served with our certificate."""
    port = gateway.gw.ports.wss

    def handshake(option: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", option, "-servername", "localhost"],
            input="", capture_output=True, text=True, timeout=15,
        )  # fmt: skip

    assert "CN = localhost" in handshake("-tls1_2").stdout
    assert "Protocol  : TLSv1.3" in handshake("-tls1_3").stdout or "TLSv1.3" in handshake("-tls1_3").stdout
    refused = handshake("-tls1_1")
    assert "Cipher is (NONE)" in refused.stdout or refused.returncode != 0
