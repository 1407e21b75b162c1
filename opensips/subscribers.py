#!/usr/bin/env python3
"""The gateway's SQLite database: digest subscribers, and the tables that keep registrations and calls.

    python3 opensips/subscribers.py init                      # create the database (nothing else)
    python3 opensips/subscribers.py add alice 's3cret'        # realm from gateway.ini (auth_realm)
    python3 opensips/subscribers.py add bob 'pw' --realm example.com --db /etc/opensips/gateway.sqlite
    python3 opensips/subscribers.py remove alice
    python3 opensips/subscribers.py list

Every command creates what is missing, with OpenSIPS's own schemas (3.6 and 4.0 agree;
scripts/sqlite/*-create.sql of the source): ``subscriber`` (auth_db, table version 8),
``location`` (usrloc, 1013: registrations survive a restart) and ``dialog`` (dialog, 12:
calls survive one), and the ``version`` rows OpenSIPS checks at start.  The file is put in
WAL mode (kept in the file): OpenSIPS's workers read subscribers while its timer writes
registrations and dialogs, and neither waits for the other.

Only HA1 hashes are stored, never the password: HA1 = MD5(user:realm:password), plus its
SHA-256 and SHA-512/256 forms for clients that use them, so the realm must be the one the
gateway challenges with (gateway.ini ``auth_realm``).  Standard library only.
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
#: The version rows OpenSIPS checks at start (db_check_table_version): the schemas below.
VERSIONS = {"subscriber": TABLE_VERSION, "location": 1013, "dialog": 12}

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
CREATE TABLE IF NOT EXISTS location (
    contact_id  INTEGER PRIMARY KEY AUTOINCREMENT  NOT NULL,
    username CHAR(64) DEFAULT '' NOT NULL,
    domain CHAR(64) DEFAULT NULL,
    contact TEXT NOT NULL,
    received CHAR(255) DEFAULT NULL,
    path CHAR(255) DEFAULT NULL,
    expires INTEGER NOT NULL,
    q FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    callid CHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INTEGER DEFAULT 13 NOT NULL,
    last_modified DATETIME DEFAULT '1900-01-01 00:00:01' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    cflags CHAR(255) DEFAULT NULL,
    user_agent CHAR(255) DEFAULT '' NOT NULL,
    socket CHAR(64) DEFAULT NULL,
    methods INTEGER DEFAULT NULL,
    sip_instance CHAR(255) DEFAULT NULL,
    kv_store TEXT(512) DEFAULT NULL,
    attr CHAR(255) DEFAULT NULL
);
CREATE TABLE IF NOT EXISTS dialog (
    dlg_id BIGINT(10) PRIMARY KEY NOT NULL,
    callid CHAR(255) NOT NULL,
    from_uri CHAR(255) NOT NULL,
    from_tag CHAR(64) NOT NULL,
    to_uri CHAR(255) NOT NULL,
    to_tag CHAR(64) NOT NULL,
    mangled_from_uri CHAR(255) DEFAULT NULL,
    mangled_to_uri CHAR(255) DEFAULT NULL,
    caller_cseq CHAR(11) NOT NULL,
    callee_cseq CHAR(11) NOT NULL,
    caller_ping_cseq INTEGER NOT NULL,
    callee_ping_cseq INTEGER NOT NULL,
    caller_route_set TEXT(512),
    callee_route_set TEXT(512),
    caller_contact CHAR(255),
    callee_contact CHAR(255),
    caller_sock CHAR(64) NOT NULL,
    callee_sock CHAR(64) NOT NULL,
    state INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    timeout INTEGER NOT NULL,
    vars BLOB(4096) DEFAULT NULL,
    profiles TEXT(512) DEFAULT NULL,
    script_flags CHAR(255) DEFAULT NULL,
    module_flags INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    rt_on_answer CHAR(64) DEFAULT NULL,
    rt_on_timeout CHAR(64) DEFAULT NULL,
    rt_on_hangup CHAR(64) DEFAULT NULL
);
"""


def ha1(algorithm: str, user: str, realm: str, password: str) -> str:
    try:
        return hashlib.new(algorithm, f"{user}:{realm}:{password}".encode()).hexdigest()
    except ValueError:  # an OpenSSL without SHA-512/256
        return ""


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    db.executemany("INSERT OR IGNORE INTO version (table_name, table_version) VALUES (?, ?)", VERSIONS.items())
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
    parser = argparse.ArgumentParser(description="The gateway's SQLite database: create it, manage digest subscribers.")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"database file (default {DEFAULT_DB}; env GATEWAY_DB)")
    parser.add_argument("--realm", default=None, help="digest realm (default: gateway.ini auth_realm)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create the database (subscribers, registrations, calls)")
    adding = commands.add_parser("add", help="add a subscriber or change its password")
    adding.add_argument("user")
    adding.add_argument("password")
    removing = commands.add_parser("remove", help="remove a subscriber")
    removing.add_argument("user")
    commands.add_parser("list", help="list subscribers")
    args = parser.parse_args(argv)
    db = connect(args.db)
    if args.command == "init":
        print(f"{args.db}: tables {', '.join(VERSIONS)} ready")
        return 0
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
