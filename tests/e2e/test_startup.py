"""The real OpenSIPS accepts our cfg (with -C) and starts with it, the Python router loaded."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import pytest

from bench import site
from bench.run import NATIVE_CFG
from gateway.settings import parse as parse_settings
from rig import mi, ng
from rig.gateway import module_dir
from rig.subscribers import subscribers

from .conftest import NO_OPENSIPS, Rig


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

    def handshake(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *options, "-servername", "localhost"],
            input="", capture_output=True, text=True, timeout=15,
        )  # fmt: skip

    tls12 = handshake("-tls1_2").stdout
    assert "New, TLSv1.2, Cipher is ECDHE-" in tls12 and "CN = localhost" in tls12, tls12[-1500:]
    tls13 = handshake("-tls1_3").stdout
    assert "New, TLSv1.3, Cipher is " in tls13 and "Cipher is (NONE)" not in tls13, tls13[-1500:]
    # SECLEVEL=0 lets OpenSSL 3's client offer TLS 1.1 at all: the refusal must be the server's alert.
    refused = handshake("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    if "no protocols available" in refused.stderr:
        pytest.skip("this OpenSSL client cannot offer TLS 1.1 at all, so the server's refusal cannot be seen")
    assert "alert protocol version" in refused.stderr and "Cipher is (NONE)" in refused.stdout, (
        refused.stdout[-800:] + refused.stderr[-800:]
    )


@pytest.mark.parametrize("mode", sorted(site.RULES))
def test_the_benchmarks_native_cfg_passes_the_check_too(opensips_bin: Optional[str], tmp_path: Path, mode: str) -> None:
    """bench/native.cfg is the reference bench.run measures the router against: the real OpenSIPS must
    accept it as bench.run writes it (an unknown variable, $af instead of $socket_in(af), once stopped
    bench.run at start and no other test saw it)."""
    if opensips_bin is None:
        pytest.skip(NO_OPENSIPS)
    rules = site.RULES[mode]
    text = NATIVE_CFG.read_text()
    listen = site.Listen(sip=15060, tls=15061, ws=15080, wss=15443, http=15888, rtpengine_ng=12222)
    database = tmp_path / "gateway.sqlite"
    subscribers.connect(str(database)).close()
    files = site.site_files(text, tmp_path, f"{module_dir(opensips_bin)}/", listen, None, database)
    cfg = tmp_path / NATIVE_CFG.name
    cfg.write_text(files.pop("cfg", text))
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "native-settings.cfg").write_text(site.native_settings(parse_settings(rules.settings.read_text())))
    (tmp_path / "native-policy.cfg").write_text(rules.native_policy.read_text())
    result = subprocess.run(
        [opensips_bin, "-C", "-f", str(cfg)], capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config file ok" in result.stdout + result.stderr
