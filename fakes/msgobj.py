"""The ``msg`` object OpenSIPS's python module hands to a route method, quirks included.

From ``modules/python/python_msgobj.c`` (identical in 3.6.8 and 4.0.1) and docs/host-facts.md:
- ``Type`` is ``"SIP_REQUEST"``/``"SIP_REPLY"``; ``Status`` is a str; reading
  ``Status`` on a request, or ``Method``/``RURI`` on a reply, returns None and
  leaves an exception pending (the fake records it: the next host call raises
  ``SystemError``, and the runtime fails the test if it is still pending at the end);
- after the route returns the object is invalidated: any use raises;
  ``copy()`` is never invalidated and reads whatever message the process handles
  next (the fake counts copies so tests can insist on none);
- ``call_function`` takes 0-8 str/None arguments and returns an int; any
  failure is a ``SystemError`` with the reason lost; an omitted optional
  integer/variable parameter crashes the worker (``HostCrash``);
- every str it returns is decoded as strict UTF-8: a header, URI or body with
  other bytes raises ``UnicodeDecodeError``;
- ``get_pseudoVar`` formats a whole string, ``"<null>"`` for unset variables,
  None (and an error in the log) for unknown names; ``set_pseudoVar`` takes two
  str and returns None.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional, Tuple

from .cfgscript import CfgError
from .signatures import SIGNATURES, Kind

if TYPE_CHECKING:
    from .runtime import Context

NULL = "<null>"
_PV = re.compile(r"\$(\w+)(?:\(([^)]*)\))?")
_INT = re.compile(r"^[+-]?\d+$")


def utf8(text: Optional[str]) -> Optional[str]:
    """The module builds every str with PyUnicode_FromString(AndSize): bytes that are not
    UTF-8 (kept as surrogates by the fake's parser) raise UnicodeDecodeError, as there."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = text.encode("utf-8", errors="surrogateescape")
        raise UnicodeDecodeError("utf-8", raw, exc.start, exc.end, "invalid continuation byte") from None
    return text


def format_pvs(ctx: Context, fmt: str) -> Optional[str]:
    """A format string with its pseudo-variables printed (``"<null>"`` for unset ones), as pv_printf does;
    None, with an error logged, for an unknown variable."""
    try:
        return ctx.runtime.runner.format(fmt, ctx)
    except CfgError as exc:
        ctx.runtime.log_error(f"ERROR: {exc} in {fmt!r}")
        return None


class HostCrash(BaseException):
    """The call would have crashed the OpenSIPS worker (and with it OpenSIPS).

    A BaseException, so that no ``except Exception`` in routing code can hide it.
    """


class FakeMsg:
    """What a route method receives as ``msg``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx: Optional[Context] = ctx

    # -- lifetime -------------------------------------------------------------------

    def invalidate(self) -> None:
        self._ctx = None

    def _live(self) -> Context:
        ctx = self._ctx
        if ctx is None:
            raise SystemError("msg used after its route returned (self->msg is NULL)")
        if ctx.runtime.pending_error:
            pending, ctx.runtime.pending_error = ctx.runtime.pending_error, None
            raise SystemError(f"<built-in method> returned a result with an exception set ({pending})")
        return ctx

    def _pending(self, ctx: Context, what: str) -> Optional[str]:
        """None with an exception left pending, as the C getter returns."""
        ctx.runtime.pending_error = what
        return None

    # -- attributes -----------------------------------------------------------------

    @property
    def Type(self) -> str:
        return "SIP_REQUEST" if self._live().msg.is_request else "SIP_REPLY"

    @property
    def Method(self) -> Optional[str]:
        ctx = self._live()
        if not ctx.msg.is_request:
            return self._pending(ctx, "Method read on a reply")
        return utf8(ctx.msg.method)

    @property
    def RURI(self) -> Optional[str]:
        ctx = self._live()
        if not ctx.msg.is_request:
            return self._pending(ctx, "RURI read on a reply")
        return utf8(ctx.msg.ruri)

    @property
    def Status(self) -> Optional[str]:
        ctx = self._live()
        if ctx.msg.is_request:
            return self._pending(ctx, "Status read on a request")
        return str(ctx.msg.status)

    @property
    def src_address(self) -> Tuple[str, int]:
        ctx = self._live()
        return ctx.source.host, ctx.source.port

    @property
    def dst_address(self) -> Tuple[str, int]:
        ctx = self._live()
        return ctx.runtime.address.host, ctx.runtime.address.port

    def getHeader(self, name: str) -> Optional[str]:
        if not isinstance(name, str):
            raise TypeError("getHeader() argument must be str")
        ctx = self._live()
        ctx.runtime.count("getHeader")
        return utf8(ctx.msg.raw_header(name))

    def copy(self) -> FakeMsg:
        ctx = self._live()
        ctx.runtime.copies += 1
        return _DanglingCopy(ctx)

    # -- URI rewriting ---------------------------------------------------------------

    def rewrite_ruri(self, uri: str) -> None:
        ctx = self._live()
        if not ctx.msg.is_request:
            raise SystemError("rewrite_ruri() on a reply")
        if not isinstance(uri, str):
            raise TypeError("rewrite_ruri() argument must be str")
        ctx.set_ruri(uri)

    def set_dst_uri(self, uri: str) -> None:
        ctx = self._live()
        if not ctx.msg.is_request:
            raise SystemError("set_dst_uri() on a reply")
        if not isinstance(uri, str):
            raise TypeError("set_dst_uri() argument must be str")
        ctx.dst_uri = uri

    # -- pseudo-variables ------------------------------------------------------------

    def get_pseudoVar(self, fmt: str) -> Optional[str]:
        if not isinstance(fmt, str):
            raise TypeError("get_pseudoVar() argument must be str")
        ctx = self._live()
        ctx.runtime.count("get_pseudoVar")
        return utf8(format_pvs(ctx, fmt))

    def set_pseudoVar(self, name: str, value: str) -> None:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("set_pseudoVar() arguments must be str")
        ctx = self._live()
        ctx.runtime.count("set_pseudoVar")
        match = _PV.fullmatch(name)
        if match is None:
            raise SystemError(f"bad pseudo-variable name {name!r}")
        ctx.pv_set(match.group(1), match.group(2), value)
        return None

    # -- script functions -------------------------------------------------------------

    def call_function(self, name: str, *args: Any) -> int:
        ctx = self._live()
        ctx.runtime.count("call_function")
        if not isinstance(name, str) or len(args) > 8:
            raise SystemError("call_function() should have from 1 to 9 arguments")
        if any(a is not None and not isinstance(a, str) for a in args):
            raise SystemError(f"{name}: arguments must be str or None, got {[type(a).__name__ for a in args]}")
        params = SIGNATURES.get(name)
        implementation = getattr(ctx.runtime, "fn_" + name, None)
        if params is None or implementation is None:
            raise SystemError(f"no such function {name!r}")
        mandatory = max((i + 1 for i, p in enumerate(params) if not p.optional), default=0)
        if len(args) < mandatory or len(args) > len(params):
            raise SystemError(f"{name}: too few or too many parameters")
        for arg, param in zip(args, params):
            if arg is None and not param.optional:
                raise SystemError(f"{name}: mandatory parameter omitted")
            if arg is not None and param.kind is Kind.INT and not _INT.match(arg):
                raise SystemError(f"{name}: parameter should be an integer, got {arg!r}")
            if arg is not None and param.kind is Kind.VAR and _PV.fullmatch(arg) is None:
                raise SystemError(f"{name}: unknown script variable {arg!r}")
        for index in range(len(args), len(params)):
            ctx.runtime.omitted.append((name, index, params[index].kind.value))
            if params[index].kind in (Kind.INT, Kind.VAR):
                raise HostCrash(
                    f"{name}: optional {params[index].kind.value} parameter {index + 1} left out: "
                    "python_msgobj.c calls strlen on the not-given marker and the worker segfaults "
                    "(pass None explicitly)"
                )
        event = ctx.runtime.record_call(name, args)
        result = int(implementation(ctx, *args))
        ctx.runtime.finish(event, result)
        return result


class _DanglingCopy(FakeMsg):
    """msg.copy(): never invalidated, so it reads whatever the process handles next."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._runtime = ctx.runtime

    def _live(self) -> Context:
        current = self._runtime.current
        if current is None:
            raise SystemError("dangling msg copy: no message in this process")
        return current

    def invalidate(self) -> None:
        pass
