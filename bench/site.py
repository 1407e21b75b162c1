"""The files beside a cfg that the benchmark writes for each OpenSIPS instance.

A site keeps its specifics beside opensips.cfg (README, "Deploying"): site.cfg
(module path, sockets, alias; read before the modules load) and
site-params.cfg (the modules' site parameters), and the router reads
gateway.ini.  The benchmark writes them the way rig/gateway.py does for the
end-to-end tests, with two differences: every instance shares one rtpengine
with no recording relay in front (the relay is Python and would slow the
media path), and a module's parameters are written only when the cfg loads
that module, so the same writer serves bench/native.cfg (no python) and an
older revision's opensips.cfg (``--compare``; one without site-params.cfg gets
them in site.cfg, one that includes site.cfg after its modules gets its mpath
on the first line).

native-settings.cfg carries gateway.ini's settings into bench/native.cfg as
routes, written from the same ``gateway.settings.Settings`` the router reads.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Dict, List, Optional

from gateway import core
from gateway.policy import Pattern
from gateway.profiles import DEFAULT_PROFILES
from gateway.settings import Settings, split_domain

BENCH = Path(__file__).resolve().parent
#: The router's settings in the benchmark: SIPp's address is a trusted source (README: Benchmark).
SETTINGS = BENCH / "gateway.ini"
#: The operator's rules of the default run: pyscripts/policy.py as shipped (route returns default; its copy in
#: fakes/shipped, which an operator's edits leave alone), and the same natively for bench/native.cfg
#: (route[policy], which changes nothing).
POLICY = BENCH.parent / "fakes" / "shipped" / "policy.py"
NATIVE_POLICY = BENCH / "native-policy.cfg"
#: ``--rules recipes``: the README's recipes at once (docs/recipes), as gateway.ini and policy.py for the
#: gateway and as route[policy] for bench/native.cfg (bench/recipes/README.md).
RECIPES = BENCH / "recipes"


@dataclass(frozen=True)
class Rules:
    """The operator's files of a run's mode: gateway.ini, policy.py, and the same rules for native.cfg."""

    name: str
    settings: Path
    policy: Path
    native_policy: Path


DEFAULT_RULES = Rules("default", SETTINGS, POLICY, NATIVE_POLICY)
RECIPE_RULES = Rules("recipes", RECIPES / "gateway.ini", RECIPES / "policy.py", RECIPES / "native-policy.cfg")
RULES = {rules.name: rules for rules in (DEFAULT_RULES, RECIPE_RULES)}

_LOADMODULE = re.compile(r'^\s*loadmodule\s+"(\w+)\.so"', re.M)


def modules_of(cfg_text: str) -> List[str]:
    """The modules a cfg loads, in order."""
    return _LOADMODULE.findall(cfg_text)


def _includes(cfg_text: str, name: str) -> Optional[int]:
    """Offset of ``include_file "name"`` outside comments, or None."""
    for match in re.finditer(r'^[ \t]*include_file\s+"' + re.escape(name) + '"', cfg_text, re.M):
        return match.start()
    return None


@dataclass(frozen=True)
class Listen:
    """Where one instance listens, and what it talks to: loopback only."""

    sip: int  # udp and tcp
    tls: int
    ws: int
    wss: int
    http: int  # MI over HTTP
    rtpengine_ng: int


def site_files(
    cfg_text: str,
    folder: Path,
    mpath: str,
    listen: Listen,
    entry: Optional[Path],
    database: Path,
) -> Dict[str, str]:
    """file name -> text, for the cfg in ``folder``: site.cfg, site-params.cfg (when the cfg includes it),
    and the cfg itself when its mpath must go on its first line."""
    loaded = set(modules_of(cfg_text))
    head = [
        "# Written by bench/site.py: loopback only, free ports.",
        f"socket = udp:127.0.0.1:{listen.sip}",
        f"socket = tcp:127.0.0.1:{listen.sip}",
        f"socket = tls:127.0.0.1:{listen.tls}",
        f"socket = ws:127.0.0.1:{listen.ws}",
        f"socket = wss:127.0.0.1:{listen.wss}",
        'alias = "gateway.local"',
    ]
    wanted = [
        ("tls_mgm", f'modparam("tls_mgm", "certificate", "[webrtc]{folder.parent / "gateway.crt"}")'),
        ("tls_mgm", f'modparam("tls_mgm", "private_key", "[webrtc]{folder.parent / "gateway.key"}")'),
        ("rtpengine", f'modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{listen.rtpengine_ng}")'),
        ("nathelper", 'modparam("nathelper", "sipping_from", "sip:keepalive@gateway.local")'),
        ("auth_db", f'modparam("auth_db", "db_url", "sqlite://{database}")'),
        ("usrloc", f'modparam("usrloc", "db_url", "sqlite://{database}")'),
        ("dialog", f'modparam("dialog", "db_url", "sqlite://{database}")'),
        ("httpd", 'modparam("httpd", "ip", "127.0.0.1")'),
        ("httpd", f'modparam("httpd", "port", {listen.http})'),
        ("mi_fifo", f'modparam("mi_fifo", "fifo_name", "{folder / "fifo"}")'),
    ]
    if entry is not None:
        wanted.append(("python", f'modparam("python", "script_name", "{entry}")'))
    params = [line for module, line in wanted if module in loaded]
    files: Dict[str, str] = {}
    first_module = _LOADMODULE.search(cfg_text)
    site_at = _includes(cfg_text, "site.cfg")
    if site_at is None:
        raise ValueError("the cfg does not include site.cfg")
    if first_module is not None and site_at < first_module.start():
        head.insert(1, f'mpath = "{mpath}"')
    else:  # an older layout: site.cfg after the modules, no mpath in it
        files["cfg"] = with_mpath(cfg_text, mpath)
    if _includes(cfg_text, "site-params.cfg") is not None:
        files["site-params.cfg"] = "\n".join(["# Written by bench/site.py.", *params]) + "\n"
    elif first_module is not None and site_at < first_module.start():
        raise ValueError("the cfg reads site.cfg before its modules and has no site-params.cfg for their parameters")
    else:
        head += params
    files["site.cfg"] = "\n".join(head) + "\n"
    return files


def with_mpath(cfg_text: str, mpath: str) -> str:
    """The cfg with an mpath line, on its first line so that line numbers in OpenSIPS's errors still match."""
    if cfg_text.startswith("#"):
        return f'mpath = "{mpath}" ' + cfg_text
    return f'mpath = "{mpath}"\n' + cfg_text


def settings_for(template: Optional[str], settings_text: str) -> str:
    """The benchmark's gateway.ini for a router whose own gateway.ini is ``template``: only the settings
    that router knows (an older router refuses unknown ones), with the benchmark's values."""
    if template is None:
        return settings_text
    known = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    known.read_string(template)
    ours = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    ours.optionxform = str  # type: ignore[assignment, method-assign]
    ours.read_string(settings_text)
    lines = []
    for section in ours.sections():
        if not known.has_section(section):
            continue
        lines.append(f"[{section}]")
        for key, value in ours[section].items():
            if section != "gateway" or known.has_option(section, key):
                lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _literal(text: str) -> str:
    if any(c in text for c in '"\\\n$'):
        raise ValueError(f"{text!r} cannot be written into a cfg string")
    return f'"{text}"'


def _any_of(variable: str, values: Collection[str]) -> str:
    return " || ".join(f"{variable} == {_literal(v)}" for v in sorted(values))


def _regex(text: str) -> str:
    """A gateway.ini regular expression as a cfg string for ``=~`` (POSIX extended): the cfg keeps a backslash
    before anything but n r t a \\ " ' as it is; Python's classes (\\d, \\w, ...) are not POSIX."""
    if any(c in text for c in '"\n') or re.search(r"\\[A-Za-z'\\]", text):
        raise ValueError(f"/{text}/ cannot be written as a POSIX regular expression in a cfg string")
    return f'"{text}"'


_SPECIAL = re.compile(r"[.+*?()\[\]{}|^$]")


def _matches(pattern: Pattern) -> str:
    """A [dialplan] or [blocked] pattern as a native test of $rU (Pattern.matches): ``=~`` searches as
    Python's re.search does; a prefix is the expression anchored at the start."""
    if pattern.regex is not None:
        return f"$rU =~ {_regex(pattern.regex.pattern)}"
    prefix = "^" + _SPECIAL.sub(lambda m: "\\" + m.group(0), pattern.text)
    return f"$rU =~ {_regex(prefix)}"


def native_tables(settings: Settings) -> List[str]:
    """gateway.ini's routing tables as route[tables] (policy.Tables.apply) and route[trunk] (Settings.trunk_uri):
    what every new request but a REGISTER gets before the operator's rules (route[policy])."""
    tables = settings.tables
    out = [
        "# Tables.apply: [blocked] prefixes get 403; the [dialplan]'s first match names the trunk of callers who",
        "# may relay (our users, trusted sources) in $var(gw_trunk); calls from or to a [media] always_proxy user",
        "# take the media proxy ($var(gw_media) = 1).  $var(gw_xs): rtpengine flags the rules add to offers",
        "# toward SIP ($var values outlive the message: each is set for every request).",
        "route[tables] {",
        '\t$var(gw_trunk) = "";',
        "\t$var(gw_media) = 0;",
        '\t$var(gw_xs) = "";',
    ]
    if tables.blocked:
        out += [f"\tif ({' || '.join(_matches(p) for p in tables.blocked)}) {{"]
        out += ['\t\tsl_send_reply(403, "Forbidden - Blocked Number");', "\t\texit;", "\t}"]
    if tables.dialplan:
        out += ["\tif ($var(from_us) == 1 || $var(trusted) == 1) {"]
        for i, (pattern, (trunk, *failover)) in enumerate(tables.dialplan):
            if failover:  # the failure route's relay to the next trunk is not written natively
                raise ValueError(f"bench's native reference has no trunk failover: [dialplan] {pattern.text}")
            out += [f"\t\t{'} else if' if i else 'if'} ({_matches(pattern)}) {{"]
            out += [f"\t\t\t$var(gw_trunk) = {_literal(trunk)};"]
        out += ["\t\t}", "\t}"]
    if tables.always_proxy:
        # switch compares strings without regard to case; the users here are lower case
        for pv in ("$fU", "$rU"):
            out += [f"\tswitch ({pv}) {{"]
            out += [f"\tcase {_literal(user)}:" for user in sorted(tables.always_proxy)]
            out += ["\t\t$var(gw_media) = 1;", "\t}"]
    out += ["}", "", "# Settings.trunk_uri: $var(gw_trunk) -> $du", "route[trunk] {"]
    names = dict(tables.trunks)
    if settings.sip_destination is not None:
        names.setdefault("default", settings.sip_destination)
    if names:  # a switch without a case is a syntax error
        out += ["\tswitch ($var(gw_trunk)) {"]
        for name, uri in sorted(names.items()):
            out += [f"\tcase {_literal(name)}:", f"\t\t$du = {_literal(uri)};"]
            out += ["\t" + line for line in _domain(settings, name)] + ["\t\tbreak;"]
        out += ["\t}"]
    else:
        out += ["\treturn;"]
    out += ["}", ""]
    return out


def _domain(settings: Settings, trunk: str) -> List[str]:
    """Settings.trunk_domain: the request URI's host, and its port or none (Router._give)."""
    domain = settings.trunk_domain(trunk)
    if domain is None:
        return []
    host, port = split_domain(domain)
    return [f"\t$rd = {_literal(host)};", f"\t$rp = {_literal(port)};"]


def native_settings(settings: Settings) -> str:
    """gateway.ini's settings as the routes bench/native.cfg calls (see its head)."""
    if settings.topology_hiding:
        raise ValueError("bench/native.cfg routes with Record-Route: the benchmark needs topology_hiding = no")
    if dict(settings.profiles) != {k: " ".join(v.split()) for k, v in DEFAULT_PROFILES.items()}:
        raise ValueError("bench/native.cfg has the default rtpengine flag table: the benchmark takes no [profiles]")
    out = ["# Written by bench/site.py from the benchmark's gateway.ini, for bench/native.cfg.", ""]
    out += ["# Settings.is_local: $var(domain) -> $var(local)", "route[is_local] {", "\t$var(local) = 0;"]
    out += [f"\tif ({_any_of('$var(domain)', settings.domains)})", "\t\t$var(local) = 1;", "}", ""]
    out += ["# trusted_sources: $si -> $var(trusted)", "route[is_trusted] {", "\t$var(trusted) = 0;"]
    if settings.trusted_sources:
        out += [f"\tif ({_any_of('$si', settings.trusted_sources)})", "\t\t$var(trusted) = 1;"]
    out += ["}", ""]
    out += ["# core.challenge_for asked for digest auth: Act.WWW_AUTH, Act.PROXY_AUTH", "route[authenticate] {"]
    if settings.auth_realm is None:
        out += ["\treturn;"]
    else:
        realm, table = _literal(settings.auth_realm), _literal(core.SUBSCRIBERS)
        for challenge, check in (("www", 'is_method("REGISTER")'), ("proxy", None)):
            user = core.Challenge(challenge).address_user
            out += [f"\tif ({check}) {{" if check else "\t} else {"]
            out += [
                f"\t\tif (!{challenge}_authorize({realm}, {table})) {{",
                f'\t\t\t{challenge}_challenge({realm}, "auth");',
                "\t\t\texit;",
                "\t\t}",
                f"\t\tif ($au == NULL || $au != {user}) {{",
                '\t\t\tsl_send_reply(403, "Forbidden - Not Your Address");',
                "\t\t\texit;",
                "\t\t}",
            ]
        out += ["\t}", "\tconsume_credentials();"]
    out += ["}", ""]
    out += ["# sip_destination: refuse (none), or route there", "route[destination] {"]
    if settings.sip_destination is None:
        out += ['\tsl_send_reply(404, "No Route To Destination");', "\texit;"]
    else:
        out += ["\treturn;"]
    out += ["}", "", "route[to_destination] {"]
    if len(settings.destination_trunks) > 1:  # the failure route's relay to the next trunk is not written natively
        raise ValueError("bench's native reference has no trunk failover: sip_destination names several trunks")
    out += ["\treturn;"] if settings.sip_destination is None else [f"\t$du = {_literal(settings.sip_destination)};"]
    out += [*_domain(settings, "default"), "}", ""]
    out += native_tables(settings)
    return "\n".join(out)


def with_trunks(settings_text: str, uris: Dict[str, str]) -> str:
    """gateway.ini's text with the [trunks] named in ``uris`` pointing there (each trunk a SIPp of the run)."""
    section = ""
    lines = []
    for line in settings_text.splitlines():
        head = re.match(r"\s*\[(\w+)\]", line)
        if head:
            section = head.group(1)
        name = re.match(r"\s*([\w-]+)\s*=", line)
        if section == "trunks" and name and name.group(1) in uris:
            line = f"{name.group(1)} = {uris[name.group(1)]}"
        lines.append(line)
    return "\n".join(lines) + "\n"
