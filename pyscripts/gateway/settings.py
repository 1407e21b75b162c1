"""Site settings for the Python side, read from an INI file (opensips/gateway.ini).

Everything a site changes lives in the opensips/ folder: site.cfg for OpenSIPS
(listeners, certificates, rtpengine sockets), gateway.ini for the router (domains,
trunks and the dial plan, blocked numbers, media rules, flag-profile overrides), and
the operator's rules in pyscripts/policy.py.  The router reads gateway.ini again when
it changes (loader.py); a file with a mistake is refused with the reason.
"""

from __future__ import annotations

import configparser
import functools
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Set, Tuple, Union

from .policy import Decision, Pattern, Tables, is_sip_uri, to_trunk
from .profiles import ProfileKey, Profiles, parse_key

ENV_VAR = "GATEWAY_SETTINGS"

SECTIONS = {"gateway", "profiles", "trunks", "dialplan", "blocked", "media", "policy", "interfaces"}

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
#: rtpengine's logical interfaces by name, each with the networks of the parties it faces (gateway.ini
#: [interfaces]); the first without networks faces everyone else.
Interfaces = Tuple[Tuple[str, Tuple[Network, ...]], ...]
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def uri_host(uri: str) -> str:
    """The host of a SIP URI (``sip:user@host:port;params`` -> ``host``; IPv6 without brackets); "" for none."""
    rest = uri.partition(":")[2]
    rest = rest.rpartition("@")[2]
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if rest.startswith("["):
        return rest[1:].partition("]")[0]
    return rest.partition(":")[0]


def one_family(uris: Iterable[str]) -> None:
    """ValueError unless the trunks at ``uris``, the ones a call fails over between, are of one address family: a
    failover branch takes the first one's plan and flags (an IPv6 address is written bracketed, with ":")."""
    if len({":" in uri_host(uri) for uri in uris}) > 1:
        raise ValueError("a call fails over between trunks of one address family (IPv4 or IPv6) only")


#: A request URI's host[:port] a trunk wants (gateway.ini [trunks] ``domain=``): a name, IPv4 or [IPv6], a port.
DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
                    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")  # fmt: skip


def _domain_ok(domain: str) -> bool:
    """A [trunks] ``domain=``: a host name, an IPv4 or bracketed IPv6 address, and a port 1-65535 if any."""
    if not DOMAIN.fullmatch(domain):
        return False
    host, port = split_domain(domain)
    if port and not 0 < int(port) < 65536:
        return False
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
    return True


def split_domain(domain: str) -> Tuple[str, str]:
    """A trunk's ``domain=`` as the request URI's host and port ("" for none): ``carrier.example:5070``."""
    if domain.startswith("["):
        host, _, port = domain.partition("]")
        return host + "]", port[1:]
    host, _, port = domain.partition(":")
    return host, port


FAILOVER_ON = frozenset({408, *range(500, 600)})  # no answer (tm's timeout), or the trunk's own failure


def _failover_on(text: str, origin: str) -> FrozenSet[int]:
    """[gateway] failover_on: codes (503) and classes (5xx) of final replies, 300-699."""
    codes: Set[int] = set()
    for word in text.replace(",", " ").split():
        if re.fullmatch(r"[3-6]xx", word.lower()):
            codes.update(range(int(word[0]) * 100, int(word[0]) * 100 + 100))
        elif word.isdigit() and 300 <= int(word) <= 699:
            codes.add(int(word))
        else:
            raise ValueError(f"{origin}: [gateway] failover_on takes reply codes (503) and classes (5xx), not {word!r}")
    return frozenset(codes)


@dataclass(frozen=True)
class Settings:
    domains: FrozenSet[str] = frozenset({"127.0.0.1", "localhost"})
    """Domains (and addresses) whose users register here; lower case."""
    sip_destination: Optional[str] = None
    """SIP URI that calls for other domains go to (a trunk or PBX); None refuses them."""
    topology_hiding: bool = False
    """Use topology_hiding() instead of Record-Route (no loose-route section then)."""
    trusted_sources: FrozenSet[str] = frozenset()
    """Addresses (e.g. the trunk) allowed to send calls for other domains through us."""
    auth_realm: Optional[str] = None
    """Digest realm for REGISTER and for our users' initial requests (subscriber table); None: no auth."""
    profiles: Profiles = field(default_factory=Profiles)
    tables: Tables = field(default_factory=lambda: Tables({}))
    """Trunks, dial plan, blocked prefixes, always-proxied users, headers the rules read."""
    interfaces: Interfaces = ()
    """rtpengine's interfaces ([interfaces]); with two or more, each offer names both legs' (direction=)."""
    failover_on: FrozenSet[int] = FAILOVER_ON
    """The final replies of a trunk after which a call goes on to its next trunk (``Decision.failover``)."""
    destination_trunks: Tuple[str, ...] = ()
    """``sip_destination`` naming trunks: those names (the first is ``sip_destination``), tried in turn."""
    credentials: Mapping[str, Credentials] = field(default_factory=dict, repr=False)
    """What the gateway answers each trunk's digest challenge with, by trunk name ([trunks] ``auth_user=`` ...)."""

    def __post_init__(self) -> None:
        first, *rest = self.destination_trunks or ("default",)
        decision = to_trunk(first)
        for name in rest:
            decision = decision.or_trunk(name)
        object.__setattr__(self, "destination", decision)

    destination: Decision = field(init=False, compare=False, repr=False)
    """What the built-in routing decides for a call to another domain: to the trunks ``sip_destination`` names,
    in turn, or to its URI (the trunk named ``default``)."""

    def side_of(self, host: str) -> str:
        """The rtpengine interface facing a party at ``host`` (an address; a name faces the default one);
        "" when the gateway has fewer than two interfaces (rtpengine then needs no direction)."""
        return _side_of(self.interfaces, host) if len(self.interfaces) > 1 else ""

    def is_local(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def trunk_domain(self, name: str) -> Optional[str]:
        """The request URI's host[:port] trunk ``name`` wants (gateway.ini [trunks] ``domain=``); None keeps the
        caller's.  ``default``: sip_destination's (its first trunk's)."""
        return self.tables.domains.get(name)

    def trunk_uri(self, name: str) -> str:
        """A trunk's URI by its gateway.ini name; ``sip_destination`` is the trunk named ``default``."""
        uri = self.tables.trunks.get(name)
        if uri is None and name == "default" and self.sip_destination is not None:
            uri = self.sip_destination
        if uri is None:
            known = ", ".join(sorted(self.tables.trunks)) or "none"
            raise ValueError(f"no trunk named {name!r} in gateway.ini [trunks] (its trunks: {known})")
        return uri


@functools.lru_cache(maxsize=1024)
def _side_of(interfaces: Interfaces, host: str) -> str:
    """A pure function of its arguments: kept by them (a few sources and trunks recur)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    default = next((name for name, networks in interfaces if not networks), interfaces[0][0])
    if address is None:
        return default
    for name, networks in interfaces:
        if any(address in network for network in networks):
            return name
    return default


def _interfaces(parser: configparser.ConfigParser, origin: str) -> Interfaces:
    if not parser.has_section("interfaces"):
        return ()
    found = []
    for name, text in parser["interfaces"].items():
        if not INTERFACE_NAME.fullmatch(name):
            raise ValueError(f"{origin}: [interfaces] {name!r} is not an rtpengine interface name")
        try:
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in text.replace(",", " ").split())
        except ValueError as exc:
            raise ValueError(f"{origin}: [interfaces] {name}: {exc}") from None
        found.append((name, networks))
    return tuple(found)


def _words(value: str) -> FrozenSet[str]:
    return frozenset(w.lower() for w in value.replace(",", " ").split())


def _uri(value: str, what: str, origin: str) -> str:
    if not is_sip_uri(value):  # a host, a port of 1-65535 (a trial's sip:, sip:@, sip:[::1 loaded)
        raise ValueError(f"{origin}: {what} must be a sip: URI with a host (sip:HOST[:PORT][;params]), not {value!r}")
    return value


def _known(section: configparser.SectionProxy, names: set[str], origin: str) -> None:
    extra = set(section) - names
    if extra:
        raise ValueError(f"{origin}: unknown setting(s) {sorted(extra)} in [{section.name}]")


@dataclass(frozen=True)
class Credentials:
    """What the gateway answers a trunk's digest challenge (401, 407) with: [trunks] ``auth_user=`` and
    ``auth_password=``; ``auth_realm=`` when the trunk's challenge must be of that realm (None: in whatever realm
    the trunk challenges).  The password is never shown."""

    user: str
    password: str = field(repr=False)
    realm: Optional[str] = None


#: A [trunks] line's options after its URI.
TRUNK_OPTIONS = ("domain", "auth_user", "auth_password", "auth_realm")


def _trunk(name: str, text: str, origin: str) -> Tuple[str, Optional[str], Optional[Credentials]]:
    """A [trunks] line's URI, its ``domain=`` (None without one) and the credentials for its challenges (None
    without): ``sip:198.51.100.7 domain=carrier.example auth_user=acme auth_password=s3cret``."""
    uri, *options = text.split()
    if "," in uri:
        raise ValueError(f"{origin}: [trunks] {name}: a comma in {uri!r}: the URI's options (domain=, auth_user=, "
                         "...) follow it after spaces")  # fmt: skip
    last = len(options) - 1
    if any(o.startswith("=") or (o in TRUNK_OPTIONS + tuple(k + "=" for k in TRUNK_OPTIONS) and k < last)
           for k, o in enumerate(options)):  # fmt: skip
        raise ValueError(f"{origin}: [trunks] {name}: write each option as key=value without spaces (domain=HOST, "
                         f"auth_user=NAME), not {text.strip()!r}")  # fmt: skip
    given: Dict[str, str] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in TRUNK_OPTIONS or key in given or not (value or key == "domain"):
            keys = ", ".join(k + "=" for k in TRUNK_OPTIONS)
            raise ValueError(f"{origin}: [trunks] {name}: after the URI only {keys} (each once, with a value), "
                             f"not {option!r}")  # fmt: skip
        given[key] = value
    domain = given.get("domain")
    if domain is not None and not _domain_ok(domain):
        hint = " (an IPv6 address in brackets: [2001:db8::1])" if domain.count(":") > 1 and "[" not in domain else ""
        raise ValueError(f"{origin}: [trunks] {name}: domain= takes a host[:port], not {domain!r}{hint}")
    uri = _uri(uri, f"trunk {name}", origin)
    credentials = None
    if given.keys() & {"auth_user", "auth_password", "auth_realm"}:
        if "auth_user" not in given or "auth_password" not in given:
            raise ValueError(f"{origin}: [trunks] {name}: credentials need both auth_user= and auth_password=")
        if any(c in given["auth_user"] + given.get("auth_realm", "") for c in '"\\'):
            raise ValueError(f"{origin}: [trunks] {name}: auth_user= and auth_realm= take no quotes or backslashes")
        credentials = Credentials(given["auth_user"], given["auth_password"], given.get("auth_realm"))
    return uri, domain, credentials


def _trunks(
    parser: configparser.ConfigParser, origin: str
) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, Credentials]]:
    """[trunks]: each one's URI, the domain= of those that have one, and the credentials of those that have them."""
    trunks: Dict[str, str] = {}
    domains: Dict[str, str] = {}
    credentials: Dict[str, Credentials] = {}
    if parser.has_section("trunks"):
        for name, text in parser["trunks"].items():
            if not text.strip():
                raise ValueError(f"{origin}: trunk {name} must be a sip: URI, not ''")
            trunks[name], domain, their = _trunk(name, text, origin)
            if domain is not None:
                domains[name] = domain
            if their is not None:
                credentials[name] = their
    return trunks, domains, credentials


def _destination(text: str, trunks: Dict[str, str], domains: Dict[str, str], origin: str) -> Tuple[str, ...]:
    """[gateway] sip_destination naming trunks: their names, the first and then those a failed call goes on to (as
    a [dialplan] line's); () for a URI or none.  The first becomes the trunk named ``default`` (``domains`` gets
    its domain= there)."""
    if not text or text.startswith(("sip:", "sips:")):
        if len(text.replace(",", " ").split()) > 1:
            raise ValueError(f"{origin}: sip_destination is one sip: URI, or trunk names, not {text!r}")
        if text:
            _uri(text, "sip_destination", origin)
        if text and "default" in trunks:
            raise ValueError(f"{origin}: sip_destination is a URI, but a trunk is named 'default', the name the rules "
                             "give sip_destination: rename that trunk")  # fmt: skip
        return ()
    names = tuple(dict.fromkeys(text.replace(",", " ").split()))
    for name in names:
        if name not in trunks:
            raise ValueError(f"{origin}: sip_destination must be a sip: URI or trunk names, not {name!r}")
    if "default" in trunks and names[0] != "default":
        raise ValueError(f"{origin}: sip_destination names {names[0]!r}, but a trunk is named 'default', the name "
                         "the rules give sip_destination: rename that trunk")  # fmt: skip
    try:
        one_family(trunks[name] for name in names)
    except ValueError as exc:
        raise ValueError(f"{origin}: sip_destination: {exc}") from None
    if names[0] in domains:
        domains["default"] = domains[names[0]]  # Settings.trunk_domain("default")
    return names


def _regex_line(key: str, value: str, origin: str) -> Tuple[str, str]:
    """A [dialplan] line whose regular expression holds "=" (``/^(?=00)/ = carrier``): the INI parser cut it at
    that "=", so the line is put together again and cut after the expression's closing "/" (trunk names hold
    none).  Spaces around the "=" inside the expression are not kept: write ``\\s`` or ``[ ]`` there."""
    line = f"{key}={value}"
    end = line.rfind("/")
    rest = line[end + 1 :].strip()
    if end <= 0 or not rest.startswith("="):
        raise ValueError(f"{origin}: [dialplan] a line is /regular expression/ = trunk, not {line!r}")
    return line[: end + 1], rest[1:]


def _tables(
    parser: configparser.ConfigParser, origin: str, trunks: Dict[str, str], domains: Dict[str, str],
    destination: Optional[str],
) -> Tables:  # fmt: skip
    """gateway.ini's routing tables.  A [dialplan] line may name ``default``: ``destination``, sip_destination's
    URI (its first trunk's)."""
    known = {"default": destination, **trunks} if destination is not None else trunks
    dialplan: List[Tuple[Pattern, Tuple[str, ...]]] = []
    if parser.has_section("dialplan"):
        for pattern, names in parser["dialplan"].items():
            if pattern.startswith("/") and not (len(pattern) > 2 and pattern.endswith("/")):
                pattern, names = _regex_line(pattern, names, origin)
            chosen = tuple(names.replace(",", " ").split())  # the trunk, then those it fails over to
            for trunk in chosen or ("",):
                if trunk not in known:
                    empty = " (the name of sip_destination, which is empty)" if trunk == "default" else ""
                    raise ValueError(f"{origin}: [dialplan] {pattern} names trunk {trunk!r}, not in [trunks]{empty}")
            try:
                one_family(known[trunk] for trunk in chosen)
            except ValueError as exc:
                raise ValueError(f"{origin}: [dialplan] {pattern}: {exc}") from None
            try:
                dialplan.append((Pattern.parse(pattern.strip()), chosen))
            except ValueError as exc:
                raise ValueError(f"{origin}: [dialplan] {exc}") from None
    blocked: List[Pattern] = []
    if parser.has_section("blocked"):
        _known(parser["blocked"], {"prefixes"}, origin)
        for text in parser["blocked"].get("prefixes", "").replace(",", " ").split():
            try:
                blocked.append(Pattern.parse(text))
            except ValueError as exc:
                raise ValueError(f"{origin}: [blocked] {exc}") from None
    proxied: FrozenSet[str] = frozenset()
    if parser.has_section("media"):
        _known(parser["media"], {"always_proxy", "info_dtmf"}, origin)
        proxied = frozenset(parser["media"].get("always_proxy", "").replace(",", " ").split())
        bad = sorted(user for user in proxied if "@" in user or ":" in user)
        if bad:
            raise ValueError(f"{origin}: [media] always_proxy takes user names (alice), not addresses: {bad}")
    headers: Tuple[str, ...] = ()
    if parser.has_section("policy"):
        _known(parser["policy"], {"headers"}, origin)
        headers = tuple(parser["policy"].get("headers", "").replace(",", " ").split())
        bad = [h for h in headers if not h.replace("-", "").replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"{origin}: [policy] headers: not header names: {bad}")
    return Tables(trunks, tuple(dialplan), tuple(blocked), proxied, headers, domains)


def parse(text: str, origin: str = "<settings>") -> Settings:
    """Settings from INI text; ValueError with the reason on anything wrong."""
    # "=" only: dial-plan patterns (regular expressions) may hold ":"
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    try:
        parser.read_string(text, source=origin)
    except configparser.Error as exc:
        raise ValueError(f"{origin}: {exc}") from None
    unknown = set(parser.sections()) - SECTIONS
    if unknown:
        raise ValueError(f"{origin}: unknown section(s) {sorted(unknown)}")
    info_dtmf = "rfc4733"
    if parser.has_section("media"):
        info_dtmf = parser["media"].get("info_dtmf", info_dtmf).strip().lower()
        if info_dtmf not in ("rfc4733", "relay"):
            raise ValueError(f"{origin}: [media] info_dtmf must be rfc4733 or relay, not {info_dtmf!r}")
    gw = parser["gateway"] if parser.has_section("gateway") else None
    values = dict(gw) if gw is not None else {}
    if gw is not None:
        _known(gw, {"domains", "sip_destination", "topology_hiding", "trusted_sources", "auth_realm", "failover_on"},
               origin)  # fmt: skip
    overrides: Dict[ProfileKey, str] = {}
    if parser.has_section("profiles"):
        for name, flags in parser["profiles"].items():
            overrides[parse_key(name)] = flags
    trunks, trunk_domains, credentials = _trunks(parser, origin)
    destination = values.get("sip_destination", "").strip() or None
    named = _destination(destination or "", trunks, trunk_domains, origin)
    if named:
        destination = trunks[named[0]]
        if named[0] in credentials:
            credentials["default"] = credentials[named[0]]
    tables = _tables(parser, origin, trunks, trunk_domains, destination)
    hiding = values.get("topology_hiding", "no").strip().lower()
    if hiding not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
        raise ValueError(f"{origin}: topology_hiding must be yes or no, not {hiding!r}")
    domains = _words(values.get("domains", "")) or Settings.domains
    return Settings(
        domains=domains,
        sip_destination=destination,
        topology_hiding=hiding in ("yes", "true", "on", "1"),
        trusted_sources=_words(values.get("trusted_sources", "")),
        auth_realm=values.get("auth_realm", "").strip() or None,
        profiles=Profiles(overrides, info_dtmf=info_dtmf == "rfc4733"),
        tables=tables,
        interfaces=_interfaces(parser, origin),
        failover_on=_failover_on(values["failover_on"], origin) if "failover_on" in values else FAILOVER_ON,
        destination_trunks=named,
        credentials=credentials,
    )


def default_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, os.pardir, os.pardir, "opensips", "gateway.ini"))


def settings_path(path: Optional[str] = None) -> str:
    """The settings file: ``path``, else GATEWAY_SETTINGS, else opensips/gateway.ini beside pyscripts/."""
    return path or os.environ.get(ENV_VAR) or default_path()


#: A settings file's [gateway] section header: a file without one is refused (``load``).
_GATEWAY_SECTION = re.compile(r"^\s*\[gateway\]\s*$", re.M)


def load(path: Optional[str] = None) -> Settings:
    """Read the settings file; ValueError when there is none, or it has no [gateway] section: an empty, cut short
    or deleted file would otherwise route on the defaults, with no digest check and no [blocked] prefixes (a
    trial found both), at start-up and on a reload alike."""
    path = settings_path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        named = f"{ENV_VAR} names {path}" if os.environ.get(ENV_VAR) else f"the settings file {path}"
        raise ValueError(f"{named}, which does not exist") from None
    settings = parse(text, path)  # its own complaints first
    if not _GATEWAY_SECTION.search(text):
        raise ValueError(
            f"{path} has no [gateway] section (empty, or cut short?): refused, as its defaults would route "
            "with no digest check"
        )
    return settings
