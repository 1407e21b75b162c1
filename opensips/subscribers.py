#!/usr/bin/env python3
"""Subscribers for digest authentication, in the SQLite database auth_db reads.

    python3 opensips/subscribers.py add alice 's3cret'        # realm from gateway.ini (auth_realm)
    python3 opensips/subscribers.py add bob 'pw' --realm example.com --db /etc/opensips/gateway.sqlite
    python3 opensips/subscribers.py remove alice
    python3 opensips/subscribers.py list

The database is created with OpenSIPS's own schema for the ``subscriber`` table
(3.6 and 4.0 agree: table version 8).  Only HA1 hashes are stored, never the
password: HA1 = MD5(user:realm:password), plus its SHA-256 and SHA-512/256
forms for clients that use them, so the realm must be the one the gateway
challenges with (gateway.ini ``auth_realm``).  Standard library only.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import os
import sqlite3
import sys
from typing import List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DB = os.environ.get("GATEWAY_DB", os.path.join(HERE, "gateway.sqlite"))
TABLE_VERSION = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS version (
    table_name CHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
);
CREATE TABLE IF NOT EXISTS subscriber (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    username CHAR(64) DEFAULT '' NOT NULL,
    domain CHAR(64) DEFAULT '' NOT NULL,
    password CHAR(25) DEFAULT '' NOT NULL,
    ha1 CHAR(64) DEFAULT '' NOT NULL,
    ha1_sha256 CHAR(64) DEFAULT '' NOT NULL,
    ha1_sha512t256 CHAR(64) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain)
);
CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username);
"""


def ha1(algorithm: str, user: str, realm: str, password: str) -> str:
    try:
        return hashlib.new(algorithm, f"{user}:{realm}:{password}".encode()).hexdigest()
    except ValueError:  # an OpenSSL without SHA-512/256
        return ""


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute("INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('subscriber', ?)", (TABLE_VERSION,))
    db.commit()
    return db


def default_realm() -> Optional[str]:
    path = os.environ.get("GATEWAY_SETTINGS") or os.path.join(HERE, "gateway.ini")
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    parser.read(path)
    realm = parser.get("gateway", "auth_realm", fallback="").strip()
    return realm or None


def add(db: sqlite3.Connection, user: str, realm: str, password: str) -> None:
    if not user or any(c in user for c in ':@; <>"') or not password:
        raise ValueError("a subscriber needs a plain user name (no ':@;<>\" or spaces) and a password")
    db.execute(
        "INSERT INTO subscriber (username, domain, ha1, ha1_sha256, ha1_sha512t256) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (username, domain) DO UPDATE SET ha1 = excluded.ha1, ha1_sha256 = excluded.ha1_sha256, "
        "ha1_sha512t256 = excluded.ha1_sha512t256",
        (
            user,
            realm,
            ha1("md5", user, realm, password),
            ha1("sha256", user, realm, password),
            ha1("sha512_256", user, realm, password),
        ),
    )
    db.commit()


def remove(db: sqlite3.Connection, user: str, realm: str) -> bool:
    gone = db.execute("DELETE FROM subscriber WHERE username = ? AND domain = ?", (user, realm)).rowcount
    db.commit()
    return gone > 0


def listing(db: sqlite3.Connection) -> List[Tuple[str, str]]:
    return list(db.execute("SELECT username, domain FROM subscriber ORDER BY domain, username"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Manage the gateway's digest subscribers (SQLite).")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"database file (default {DEFAULT_DB}; env GATEWAY_DB)")
    parser.add_argument("--realm", default=None, help="digest realm (default: gateway.ini auth_realm)")
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="add a subscriber or change its password")
    adding.add_argument("user")
    adding.add_argument("password")
    removing = commands.add_parser("remove", help="remove a subscriber")
    removing.add_argument("user")
    commands.add_parser("list", help="list subscribers")
    args = parser.parse_args(argv)
    db = connect(args.db)
    if args.command == "list":
        for user, realm in listing(db):
            print(f"{user}@{realm}")
        return 0
    realm = args.realm or default_realm()
    if not realm:
        print("no realm: give --realm or set auth_realm in gateway.ini", file=sys.stderr)
        return 2
    if args.command == "add":
        try:
            add(db, args.user, realm, args.password)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{args.user}@{realm} can register now")
        return 0
    if not remove(db, args.user, realm):
        print(f"no subscriber {args.user}@{realm}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
