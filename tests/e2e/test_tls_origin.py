"""TLS and the WebSocket handshake on the real OpenSIPS: what the WSS and TLS SIP ports accept.

``openssl s_client`` against the running server: TLS 1.1 (the client allowed to offer it) is refused,
CBC and static-RSA suites are refused, an ECDHE + AEAD handshake succeeds, and no client certificate
is asked for (browsers have none).  The main rig's certificate is ECDSA; a second rig with an RSA
certificate shows that a static-RSA suite (AES128-SHA) is refused by the cipher list, not merely
impossible with the key.  A third rig turns on the trunk domain that opensips/site-params.cfg
keeps commented out: the TLS SIP socket then requires a certificate from the trunks' CA, while
the WSS socket still asks for none.  Origin: OpenSIPS requires the header (proto_ws/proto_wss require_origin)
and never compares its value (modules/proto_ws/ws_handshake_common.h).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest

from rig.gateway import CFG_DIR

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


def refused_by_server(result: subprocess.CompletedProcess[str]) -> bool:
    """Not agreed, and because the server said no (its alert), not because the client could not even offer it."""
    return not accepted(result) and re.search(r"alert (handshake failure|protocol version)", result.stderr) is not None


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
        if "no protocols available" in old.stderr:  # the client's own refusal would say nothing of the server
            pytest.skip("this OpenSSL client cannot offer TLS 1.1 at all, so the server's refusal cannot be seen")
        assert not accepted(old), (name, old.stdout[-800:])
        assert "alert protocol version" in old.stderr, (name, old.stderr[-800:])  # the server's refusal
        cbc = handshake(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
        assert refused_by_server(cbc), (name, cbc.stdout[-800:], cbc.stderr[-800:])
        # (RC4 is not tried: OpenSSL 3's client cannot offer it, "no cipher match", so it says nothing of us.)


@pytest.fixture(scope="session")
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
        assert refused_by_server(static), (name, static.stdout[-800:], static.stderr[-800:])
        static_gcm = handshake(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256")  # AEAD, but no forward secrecy
        assert refused_by_server(static_gcm), (name, static_gcm.stderr[-800:])
        good = handshake(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
        assert accepted(good), (name, good.stdout[-800:])
        assert not cert_asked(good), name


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def trunk_domain(ca: Path) -> str:
    """opensips/site-params.cfg's commented trunk domain, uncommented, with the rig's files and TLS port."""
    lines = [
        line[1:]
        for line in (CFG_DIR / "site-params.cfg").read_text().splitlines()
        if line.startswith('#modparam("tls_mgm"') and "trunks" in line
    ]
    assert len(lines) == 9, lines
    return (
        "\n".join(lines)
        .replace("127.0.0.1:5061", "127.0.0.1:{tls_port}")
        .replace("/etc/opensips/tls/gateway", "{folder}/gateway")
        .replace("/etc/opensips/tls/trunks-ca.crt", str(ca))
    )


@pytest.fixture(scope="session")
def trunk_rig(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, Path]]:
    """A rig whose TLS SIP socket requires a client certificate; the folder holds a trunk's and a stranger's."""
    need("openssl")
    keys = tmp_path_factory.mktemp("trunk-keys")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", str(keys / "ca.key"), "-out", str(keys / "ca.crt"), "-days", "2",
            "-subj", "/CN=trunks CA")  # fmt: skip
    openssl("req", *ec, "-keyout", str(keys / "trunk.key"), "-out", str(keys / "trunk.csr"), "-subj", "/CN=trunk")
    openssl("x509", "-req", "-in", str(keys / "trunk.csr"), "-CA", str(keys / "ca.crt"), "-CAkey", str(keys / "ca.key"),
            "-CAcreateserial", "-out", str(keys / "trunk.crt"), "-days", "2")  # fmt: skip
    openssl("req", "-x509", *ec, "-keyout", str(keys / "stranger.key"), "-out", str(keys / "stranger.crt"),
            "-days", "2", "-subj", "/CN=stranger")  # fmt: skip
    folder = tmp_path_factory.mktemp("trunks")
    with own_rig(opensips_bin, folder, extra_params=trunk_domain(keys / "ca.crt")) as rig:
        yield rig, keys


def test_trunks_on_the_tls_socket_must_show_a_certificate_from_their_ca(trunk_rig: tuple[Rig, Path]) -> None:
    rig, keys = trunk_rig
    tls = rig.gw.ports.tls
    bare = handshake(tls, "-tls1_2", "-cipher", ECDSA_AEAD)
    assert cert_asked(bare) and not accepted(bare), bare.stdout[-800:]
    stranger = handshake(tls, "-tls1_2", "-cipher", ECDSA_AEAD,
                         "-cert", str(keys / "stranger.crt"), "-key", str(keys / "stranger.key"))  # fmt: skip
    assert not accepted(stranger), stranger.stdout[-800:]
    trunk = handshake(tls, "-tls1_2", "-cipher", ECDSA_AEAD,
                      "-cert", str(keys / "trunk.crt"), "-key", str(keys / "trunk.key"))  # fmt: skip
    assert cert_asked(trunk) and accepted(trunk), trunk.stdout[-800:]
    browser = handshake(rig.gw.ports.wss, "-tls1_2", "-cipher", ECDSA_AEAD)  # the WebSocket domain is unchanged
    assert accepted(browser) and not cert_asked(browser)


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_websocket_needs_an_origin_header_but_any_value_passes(gateway: Rig, secure: bool) -> None:
    port = gateway.gw.ports.wss if secure else gateway.gw.ports.ws
    offset = gateway.log_size()
    status, _, ws = WebSocket.handshake(port, secure, origin=None)
    assert ws is None and status != 101, status
    for origin in ("https://evil.example", "null", "x"):
        status, headers, ws = WebSocket.handshake(port, secure, origin=origin)
        assert status == 101 and ws is not None, (origin, status)
        assert headers.get("sec-websocket-protocol") == "sip"
        ws.close()
    assert "Origin header not present" in gateway.log_since(offset)  # this test's refusal, not an earlier one's


def test_the_readme_says_what_a_deployment_must_do_about_origin() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "never compares its value" in readme and "reverse proxy that checks `Origin`" in readme
