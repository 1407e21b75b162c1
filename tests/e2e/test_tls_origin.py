"""TLS and the WebSocket handshake on the real OpenSIPS: what the WSS and TLS SIP ports accept.

``openssl s_client`` against the running server: TLS 1.1 (the client allowed to offer it) is refused,
CBC and static-RSA suites are refused, an ECDHE + AEAD handshake succeeds, and no client certificate
is asked for (browsers have none).  The main rig's certificate is ECDSA; a second rig with an RSA
certificate shows that a static-RSA suite (AES128-SHA) is refused by the cipher list, not merely
impossible with the key.  Origin: OpenSIPS requires the header (proto_ws/proto_wss require_origin)
and never compares its value (modules/proto_ws/ws_handshake_common.h).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest

from .conftest import Rig, need, own_rig
from .wsclient import WebSocket

ECDSA_AEAD = "ECDHE-ECDSA-AES128-GCM-SHA256"


def handshake(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *options],
        input="", capture_output=True, text=True, timeout=15,
    )  # fmt: skip


def accepted(result: subprocess.CompletedProcess[str]) -> bool:
    out = result.stdout
    return result.returncode == 0 and "Cipher is (NONE)" not in out and "New, " in out


def cert_asked(result: subprocess.CompletedProcess[str]) -> bool:
    # s_client prints these only when the server sent a CertificateRequest.
    return "Acceptable client certificate CA names" in result.stdout or "Requested Signature" in result.stdout


def ports(rig: Rig) -> Sequence[tuple[str, int]]:
    return (("wss", rig.gw.ports.wss), ("tls", rig.gw.ports.tls))


def test_tls_accepts_ecdhe_aead_and_asks_no_client_certificate(gateway: Rig) -> None:
    need("openssl")
    for name, port in ports(gateway):
        for option in ("-tls1_2", "-tls1_3"):
            result = handshake(port, option, *(["-cipher", ECDSA_AEAD] if option == "-tls1_2" else []))
            assert accepted(result), (name, option, result.stdout[-1500:])
            assert not cert_asked(result), (name, option)


def test_tls_refuses_tls11_and_cbc_suites(gateway: Rig) -> None:
    need("openssl")
    for name, port in ports(gateway):
        # SECLEVEL=0 lets OpenSSL 3's client offer TLS 1.1 at all: the refusal is the server's.
        old = handshake(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        assert not accepted(old), (name, old.stdout[-800:])
        assert "protocol version" in old.stdout + old.stderr or "no protocols available" in old.stderr, name
        cbc = handshake(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
        assert not accepted(cbc), (name, cbc.stdout[-800:])
        rc4 = handshake(port, "-tls1_2", "-cipher", "RC4-SHA")
        assert not accepted(rc4), name  # OpenSSL 3 cannot even offer RC4 (no cipher match): never agreed


@pytest.fixture(scope="module")
def rsa_rig(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    need("openssl")
    folder = tmp_path_factory.mktemp("rsa-cert")
    keys = tmp_path_factory.mktemp("rsa-key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(keys / "rsa.key"),
         "-out", str(keys / "rsa.crt"), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with own_rig(opensips_bin, folder, certificate=(keys / "rsa.crt", keys / "rsa.key")) as rig:
        yield rig


def test_with_an_rsa_certificate_static_rsa_is_refused_ecdhe_rsa_accepted(rsa_rig: Rig) -> None:
    for name, port in ports(rsa_rig):
        static = handshake(port, "-tls1_2", "-cipher", "AES128-SHA")
        assert not accepted(static), (name, static.stdout[-800:])
        static_gcm = handshake(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256")  # AEAD, but no forward secrecy
        assert not accepted(static_gcm), name
        good = handshake(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
        assert accepted(good), (name, good.stdout[-800:])
        assert not cert_asked(good), name


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_websocket_needs_an_origin_header_but_any_value_passes(gateway: Rig, secure: bool) -> None:
    port = gateway.gw.ports.wss if secure else gateway.gw.ports.ws
    status, _, ws = WebSocket.handshake(port, secure, origin=None)
    assert ws is None and status != 101, status
    for origin in ("https://evil.example", "null", "x"):
        status, headers, ws = WebSocket.handshake(port, secure, origin=origin)
        assert status == 101 and ws is not None, (origin, status)
        assert headers.get("sec-websocket-protocol") == "sip"
        ws.close()
    assert "Origin header not present" in gateway.gw.log()


def test_the_readme_says_what_a_deployment_must_do_about_origin() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "never compares its value" in readme and "reverse proxy that checks `Origin`" in readme
