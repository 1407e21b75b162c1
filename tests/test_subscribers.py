"""The command that adds subscribers writes what auth_db reads."""

from __future__ import annotations

import hashlib
import pathlib
import sqlite3
import subprocess
import sys

import pytest

from fakes.runtime import digest_response

TOOL = pathlib.Path(__file__).resolve().parent.parent / "opensips" / "subscribers.py"


def run(*args: str, db: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "--db", str(db), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_add_list_remove(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "gw.sqlite"
    assert run("--realm", "example.com", "add", "alice", "s3cret", db=db).returncode == 0
    assert run("--realm", "example.com", "add", "bob", "pw", db=db).returncode == 0
    assert run("list", db=db).stdout.split() == ["alice@example.com", "bob@example.com"]
    assert run("--realm", "example.com", "remove", "bob", db=db).returncode == 0
    assert run("--realm", "example.com", "remove", "bob", db=db).returncode == 1
    assert run("list", db=db).stdout.split() == ["alice@example.com"]


def test_only_hashes_are_stored_and_they_answer_a_digest_challenge(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "gw.sqlite"
    run("--realm", "example.com", "add", "alice", "s3cret", db=db)
    run("--realm", "example.com", "add", "alice", "n3w", db=db)  # a second add changes the password
    rows = sqlite3.connect(db).execute("SELECT username, domain, password, ha1, ha1_sha256 FROM subscriber").fetchall()
    assert len(rows) == 1
    user, realm, password, ha1, ha1_sha256 = rows[0]
    assert (user, realm, password) == ("alice", "example.com", "")
    assert ha1 == hashlib.md5(b"alice:example.com:n3w").hexdigest()
    assert ha1_sha256 == hashlib.sha256(b"alice:example.com:n3w").hexdigest()
    creds = {"username": "alice", "realm": "example.com", "nonce": "abc", "uri": "sip:example.com"}
    expected = digest_response(creds, "n3w", "REGISTER")
    ha2 = hashlib.md5(b"REGISTER:sip:example.com").hexdigest()
    assert expected == hashlib.md5(f"{ha1}:abc:{ha2}".encode()).hexdigest()


def test_the_schema_is_opensips_subscriber_version_8(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "gw.sqlite"
    run("list", db=db)
    con = sqlite3.connect(db)
    assert con.execute("SELECT table_version FROM version WHERE table_name = 'subscriber'").fetchone() == (8,)
    columns = [row[1] for row in con.execute("PRAGMA table_info(subscriber)")]
    assert columns == ["id", "username", "domain", "password", "ha1", "ha1_sha256", "ha1_sha512t256"]


@pytest.mark.parametrize("user", ["", "a@b", "a:b", "a b", 'a"b'])
def test_bad_names_are_refused(tmp_path: pathlib.Path, user: str) -> None:
    result = run("--realm", "example.com", "add", user, "pw", db=tmp_path / "gw.sqlite")
    assert result.returncode == 2 and "plain user name" in result.stderr


def test_the_realm_comes_from_gateway_ini(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ini = tmp_path / "gateway.ini"
    ini.write_text("[gateway]\nauth_realm = sip.example.org\n")
    monkeypatch.setenv("GATEWAY_SETTINGS", str(ini))
    db = tmp_path / "gw.sqlite"
    assert run("add", "carol", "pw", db=db).returncode == 0
    assert run("list", db=db).stdout.split() == ["carol@sip.example.org"]
    ini.write_text("[gateway]\n")
    assert run("add", "dave", "pw", db=db).returncode == 2
