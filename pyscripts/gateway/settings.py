"""Site settings for the Python side, read once from an INI file (opensips/gateway.ini).

Everything a site changes lives in the opensips/ folder: site.cfg for OpenSIPS
(listeners, certificates, rtpengine sockets) and gateway.ini for the router
(domains, SIP destination, topology hiding, flag-profile overrides).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional

from .profiles import ProfileKey, Profiles, parse_key

ENV_VAR = "GATEWAY_SETTINGS"


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

    def is_local(self, domain: str) -> bool:
        return domain.lower() in self.domains


def _words(value: str) -> FrozenSet[str]:
    return frozenset(w.lower() for w in value.replace(",", " ").split())


def parse(text: str, origin: str = "<settings>") -> Settings:
    """Settings from INI text; ValueError with the reason on anything wrong."""
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    try:
        parser.read_string(text, source=origin)
    except configparser.Error as exc:
        raise ValueError(f"{origin}: {exc}") from None
    unknown = set(parser.sections()) - {"gateway", "profiles"}
    if unknown:
        raise ValueError(f"{origin}: unknown section(s) {sorted(unknown)}")
    gw = parser["gateway"] if parser.has_section("gateway") else {}
    known = {"domains", "sip_destination", "topology_hiding", "trusted_sources", "auth_realm"}
    extra = set(gw) - known
    if extra:
        raise ValueError(f"{origin}: unknown setting(s) {sorted(extra)} in [gateway]")
    overrides: Dict[ProfileKey, str] = {}
    if parser.has_section("profiles"):
        for name, flags in parser["profiles"].items():
            overrides[parse_key(name)] = flags
    destination = gw.get("sip_destination", "").strip() or None
    if destination is not None and not destination.startswith(("sip:", "sips:")):
        raise ValueError(f"{origin}: sip_destination must be a sip: URI, not {destination!r}")
    hiding = gw.get("topology_hiding", "no").strip().lower()
    if hiding not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
        raise ValueError(f"{origin}: topology_hiding must be yes or no, not {hiding!r}")
    domains = _words(gw.get("domains", "")) or Settings.domains
    return Settings(
        domains=domains,
        sip_destination=destination,
        topology_hiding=hiding in ("yes", "true", "on", "1"),
        trusted_sources=_words(gw.get("trusted_sources", "")),
        auth_realm=gw.get("auth_realm", "").strip() or None,
        profiles=Profiles(overrides),
    )


def default_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, os.pardir, os.pardir, "opensips", "gateway.ini")


def load(path: Optional[str] = None) -> Settings:
    """Read the settings file (GATEWAY_SETTINGS, else opensips/gateway.ini); defaults when there is none."""
    path = path or os.environ.get(ENV_VAR) or default_path()
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read(), path)
    except FileNotFoundError:
        if os.environ.get(ENV_VAR):
            raise ValueError(f"{ENV_VAR} names {path}, which does not exist") from None
        return Settings()
