"""OpenSIPS's route script, the part our opensips.cfg uses: parsed and run by the fake host.

The offline tests run what OpenSIPS runs.  The fake host (``runtime.Gateway``) loads
``opensips/opensips.cfg`` through this module and executes its routes statement by
statement, calling the module functions it emulates; nothing of the cfg's logic is
written a second time in Python.  What is here follows OpenSIPS 3.6.8 and 4.0.1
(``cfg.y``, ``action.c``, ``route.c``, ``pvar.c``, ``transformations.c``):

- Values are NULL (``None``), a string, or an integer.  An integer always has its
  string form too (``pv_get_sintval`` sets both flags), a string is only a string:
  ``$var(x) == 1`` is an invalid operation (false, and a warning) when ``$var(x)``
  holds the *string* "1", which is what Python's ``set_pseudoVar`` stores.
- A condition is 1 (true), 0 (false) or -1 (an error, false).  ``a && b`` stops
  unless ``a`` is 1, ``a || b`` stops unless ``a`` is 0, ``!`` keeps an error an
  error.  A function call is true when it returns more than 0; **0 ends the whole
  script like ``exit``** (route.c: ``EXPR_DROP``), wherever the call stands.
- Arithmetic: an integer left operand makes an integer operation (a NULL right one
  counts 0, a string one is an error); otherwise ``+`` joins strings (NULL joins as
  nothing).  ``switch`` compares strings case-insensitively and falls through to
  the next case until ``break``.
- ``route(name)`` runs a named route; the name may be a format (``"do_$var(x)"``)
  or a variable, looked up when the statement runs; an unknown one is an error.
- Strings in the cfg are formats: ``$...`` inside are printed when the statement
  runs (NULL prints ``<null>``), escapes read as cfg.lex reads them.

Anything the cfg uses that is not here is refused when the cfg is parsed or when
the statement runs (``CfgError``): a construct the fake does not know must not
pass offline as if it did nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Set, Tuple, Union

Value = Union[None, int, str]


class CfgError(Exception):
    """The cfg uses something this interpreter does not know, or is not valid script."""


# -- signals that unwind the statement runner ---------------------------------------------


class ExitScript(Exception):
    """``exit``, or a function returning 0: the whole script ends here."""


class DropMessage(Exception):
    """``drop``: the request (or, in a branch route, the branch; in a reply route, the reply) goes nowhere."""


class ReturnFromRoute(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class BreakLoop(Exception):
    """``break``: out of the innermost ``switch`` or ``while``."""


# -- lexer --------------------------------------------------------------------------------

_OPERATORS = (
    "==", "!=", "=~", "!~", "<=", ">=", "&&", "||", ":=", "+=",
    "<", ">", "=", "!", "&", "|", "+", "-", "*", "/", "%", "(", ")", "{", "}", "[", "]", ";", ",", ":",
)  # fmt: skip
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "\\": "\\", '"': '"', "'": "'"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class Tok:
    kind: str  # STR NUM ID PV OP EOF
    text: str
    line: int
    start: int = 0
    """Offsets of the token in the cfg's text."""
    end: int = 0


def unescape(body: str) -> str:
    """A cfg string's escapes as cfg.lex reads them: a backslash before anything else stays."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body, flags=re.S)


def _balanced(text: str, start: int) -> int:
    """The index just past the bracket that closes the one at ``start`` (``(``, ``{`` or ``[``)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = [pairs[text[start]]]
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
        elif ch == "\n":
            break
        i += 1
    raise CfgError(f"unbalanced {text[start]!r} in {text[start : start + 40]!r}")


def pv_end(text: str, start: int) -> int:
    """Where the pseudo-variable starting at ``text[start] == '$'`` ends."""
    i = start + 1
    if i < len(text) and text[i] == "(":
        return _balanced(text, i)
    match = _NAME.match(text, i)
    if match is None:
        raise CfgError(f"bad pseudo-variable at {text[start : start + 20]!r}")
    i = match.end()
    if i < len(text) and text[i] == "(":
        i = _balanced(text, i)
    return i


def tokenize(text: str) -> List[Tok]:
    tokens: List[Tok] = []
    i, line = 0, 1
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch in " \t\r":
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise CfgError(f"line {line}: unterminated comment")
            line += text.count("\n", i, end)
            i = end + 2
        elif ch in "\"'":
            j = i + 1
            while j < len(text) and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise CfgError(f"line {line}: unterminated string")
            tokens.append(Tok("STR", unescape(text[i + 1 : j]), line, i, j + 1))
            line += text.count("\n", i, j)
            i = j + 1
        elif ch.isdigit():
            match = re.compile(r"\d+").match(text, i)
            assert match is not None
            tokens.append(Tok("NUM", match.group(0), line, i, match.end()))
            i = match.end()
        elif ch == "$":
            end = pv_end(text, i)
            tokens.append(Tok("PV", text[i:end], line, i, end))
            i = end
        elif _NAME.match(text, i):
            match = _NAME.match(text, i)
            assert match is not None
            tokens.append(Tok("ID", match.group(0), line, i, match.end()))
            i = match.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                raise CfgError(f"line {line}: unexpected {ch!r}")
            tokens.append(Tok("OP", op, line, i, i + len(op)))
            i += len(op)
    tokens.append(Tok("EOF", "", line, len(text), len(text)))
    return tokens


# -- pseudo-variables and transformations -----------------------------------------------


@dataclass(frozen=True)
class Transform:
    name: str
    params: Tuple[str, ...]


@dataclass(frozen=True)
class PV:
    """``$name``, ``$name(arg)``, ``$(name(arg){tr}{tr})``, ``$(<context>name(arg){tr})`` (tm's ``reply``: the
    reply tm picked, in a failure route)."""

    name: str
    arg: Optional[str]
    transforms: Tuple[Transform, ...] = ()
    text: str = ""
    context: str = ""

    def __str__(self) -> str:
        return self.text


_PV_INNER = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)(?:\((.*?)\))?((?:\{.*\})*)$", re.S)


def parse_pv(text: str) -> PV:
    if text.startswith("$("):
        inner, context = text[2:-1], ""
        if inner.startswith("<"):
            context, _, inner = inner[1:].partition(">")
        match = _PV_INNER.match(inner)
        if match is None:
            raise CfgError(f"bad pseudo-variable {text!r}")
        transforms = tuple(_transforms(match.group(3) or ""))
        return PV(match.group(1), match.group(2), transforms, text, context)
    match = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_.]*)(?:\((.*)\))?", text, re.S)
    if match is None:
        raise CfgError(f"bad pseudo-variable {text!r}")
    return PV(match.group(1), match.group(2), (), text)


def _transforms(text: str) -> Iterator[Transform]:
    i = 0
    while i < len(text):
        if text[i] != "{":
            raise CfgError(f"bad transformation list {text!r}")
        end = _balanced(text, i)
        body = text[i + 1 : end - 1]
        if body.startswith("s.select,"):
            # {s.select,index,separator}: the separator is one character, which may be a comma
            rest = body[len("s.select,") :]
            if rest.endswith(",,"):
                index, sep = rest[:-2], ","
            else:
                index, _, sep = rest.partition(",")
            name, params = "s.select", [index, sep]
        else:
            name, *params = _split_params(body)
        if name not in TRANSFORMS:
            raise CfgError(f"transformation {{{name}}} is not known to the fake")
        yield Transform(name, tuple(params))
        i = end


def _split_params(body: str) -> List[str]:
    """``s.select,$var(i), `` -> ["s.select", "$var(i)", " "]: commas inside a pv do not split."""
    parts, current, i = [], "", 0
    while i < len(body):
        if body[i] == "$":
            end = pv_end(body, i)
            current += body[i:end]
            i = end
        elif body[i] == ",":
            parts.append(current)
            current = ""
            i += 1
        else:
            current += body[i]
            i += 1
    parts.append(current)
    return parts


def as_text(value: Value) -> str:
    return "" if value is None else str(value)


def to_int(text: str) -> int:
    """``{s.int}``: the leading (signed) digits, 0 without any."""
    match = re.match(r"\s*[+-]?\d+", text)
    return int(match.group(0)) if match else 0


def _raw(value: Value) -> bytes:
    # The fake keeps a message's bytes that are not UTF-8 as surrogates (sipmsg.py).
    return as_text(value).encode("utf-8", errors="surrogateescape")


def _select(value: Value, index: int, sep: str) -> Value:
    fields = as_text(value).split(sep)
    if -len(fields) <= index < len(fields):
        return fields[index]
    return None


def _fill_left(value: Value, pad: str, size: int) -> Value:
    text = as_text(value)
    while len(text) < size:
        text = pad + text
    return text[-size:] if len(text) > size and pad else text


TRANSFORMS: Dict[str, Callable[..., Value]] = {
    "s.len": lambda v: len(_raw(v)),
    "s.int": lambda v: v if isinstance(v, int) else to_int(as_text(v)),
    "s.encode.hexa": lambda v: _raw(v).hex(),
    "s.index": lambda v, needle: as_text(v).find(needle),
    "s.select": lambda v, index, sep: _select(v, to_int(index), sep[:1]),
    "s.fill.left": lambda v, pad, size: _fill_left(v, pad, to_int(size)),
    "s.tolower": lambda v: as_text(v).lower(),
}


# -- syntax tree --------------------------------------------------------------------------


@dataclass
class Node:
    line: int


@dataclass
class Const(Node):
    value: Value


@dataclass
class PVRef(Node):
    pv: PV


@dataclass
class Call(Node):
    name: str
    args: List[Node]


@dataclass
class Unary(Node):
    op: str
    operand: Node


@dataclass
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass
class Bracket(Node):
    """``[ expr ]``: an arithmetic/bitwise expression inside a condition."""

    expr: Node


@dataclass
class Stmt:
    line: int


@dataclass
class Block(Stmt):
    body: List[Stmt]


@dataclass
class If(Stmt):
    cond: Node
    then: Stmt
    otherwise: Optional[Stmt]


@dataclass
class While(Stmt):
    cond: Node
    body: Stmt


@dataclass
class Case:
    label: Value  # None for default
    body: List[Stmt]
    default: bool = False


@dataclass
class Switch(Stmt):
    pv: PV
    cases: List[Case]


@dataclass
class Assign(Stmt):
    pv: PV
    op: str
    expr: Node


@dataclass
class CallStmt(Stmt):
    call: Call


@dataclass
class RouteCall(Stmt):
    name: Node  # Const (a name or a format) or PVRef
    params: List[Node] = field(default_factory=list)


@dataclass
class Keyword(Stmt):
    word: str  # exit drop break
    value: Optional[Node] = None  # return(value)


ROUTE_KINDS = ("route", "branch_route", "onreply_route", "failure_route", "startup_route", "local_route",
               "error_route", "event_route", "timer_route")  # fmt: skip


@dataclass(frozen=True)
class Action:
    """A statement but a block (a call, an assignment, route(), exit, drop, return, break; an if, switch or
    while with all it holds) and where its text stands in the cfg: what the mutation check deletes or moves."""

    line: int
    start: int
    end: int
    text: str


@dataclass
class RouteBlock:
    kind: str
    name: str
    body: List[Stmt]
    line: int
    end_line: int
    actions: List[Action] = field(default_factory=list)
    close: int = 0
    """Offset of the route's closing brace."""


@dataclass
class Script:
    routes: Dict[Tuple[str, str], RouteBlock]
    modparams: List[Tuple[str, str, Value]]
    globals: Dict[str, Value]
    text: str

    def route(self, kind: str, name: str = "") -> RouteBlock:
        try:
            return self.routes[(kind, name)]
        except KeyError:
            raise CfgError(f"no {kind}[{name}] in the cfg") from None

    def modparam(self, module: str, param: str) -> List[Value]:
        return [v for m, p, v in self.modparams if m == module and p == param]


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.actions: List[Action] = []

    # token helpers

    @property
    def tok(self) -> Tok:
        return self.tokens[self.pos]

    def next(self) -> Tok:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at(self, kind: str, text: Optional[str] = None) -> bool:
        tok = self.tok
        return tok.kind == kind and (text is None or tok.text == text)

    def accept(self, kind: str, text: Optional[str] = None) -> Optional[Tok]:
        if self.at(kind, text):
            return self.next()
        return None

    def expect(self, kind: str, text: Optional[str] = None) -> Tok:
        tok = self.accept(kind, text)
        if tok is None:
            raise CfgError(f"line {self.tok.line}: expected {text or kind}, found {self.tok.text!r}")
        return tok

    # top level

    def script(self, text: str) -> Script:
        routes: Dict[Tuple[str, str], RouteBlock] = {}
        modparams: List[Tuple[str, str, Value]] = []
        globals_: Dict[str, Value] = {}
        while not self.at("EOF"):
            tok = self.expect("ID")
            if tok.text in ROUTE_KINDS:
                name = ""
                if self.accept("OP", "["):
                    name = self.next().text
                    while not self.accept("OP", "]"):
                        self.next()
                block_start = self.expect("OP", "{")
                self.actions = []
                body = self.statements_until("}")
                end = self.expect("OP", "}")
                key = (tok.text, "" if tok.text == "route" and name == "0" else name)
                if key in routes:
                    raise CfgError(f"line {tok.line}: {tok.text}[{name}] defined twice")
                routes[key] = RouteBlock(tok.text, key[1], body, block_start.line, end.line, self.actions, end.start)
            elif tok.text == "loadmodule" or tok.text == "include_file":
                self.expect("STR")
            elif tok.text == "modparam":
                self.expect("OP", "(")
                module = self.expect("STR").text
                self.expect("OP", ",")
                param = self.expect("STR").text
                self.expect("OP", ",")
                value = self.literal()
                self.expect("OP", ")")
                modparams.append((module, param, value))
            else:
                self.expect("OP", "=")
                globals_[tok.text] = self.literal()
        return Script(routes, modparams, globals_, text)

    def literal(self) -> Value:
        negative = self.accept("OP", "-") is not None
        tok = self.next()
        if tok.kind == "NUM":
            return -int(tok.text) if negative else int(tok.text)
        if tok.kind in ("STR", "ID") and not negative:
            return tok.text
        raise CfgError(f"line {tok.line}: expected a value, found {tok.text!r}")

    # statements

    def statements_until(self, closer: str) -> List[Stmt]:
        body = []
        while not self.at("OP", closer):
            if self.at("EOF"):
                raise CfgError(f"line {self.tok.line}: missing {closer!r}")
            stmt = self.statement()
            if stmt is not None:
                body.append(stmt)
        return body

    def statement(self) -> Optional[Stmt]:
        first = self.tok
        stmt = self._statement()
        if stmt is not None and not isinstance(stmt, Block):
            last = self.tokens[self.pos - 1]
            self.actions.append(Action(first.line, first.start, last.end, self.text[first.start : last.end]))
        return stmt

    def _statement(self) -> Optional[Stmt]:
        tok = self.tok
        if self.accept("OP", ";"):
            return None
        if self.accept("OP", "{"):
            body = self.statements_until("}")
            self.expect("OP", "}")
            return Block(tok.line, body)
        if tok.kind == "PV":
            self.next()
            op = self.next()
            if op.text not in ("=", ":=", "+="):
                raise CfgError(f"line {op.line}: expected an assignment after {tok.text}")
            expr = self.expression()
            self.expect("OP", ";")
            return Assign(tok.line, parse_pv(tok.text), op.text, expr)
        word = self.expect("ID")
        if word.text == "if":
            self.expect("OP", "(")
            cond = self.expression()
            self.expect("OP", ")")
            then = self.required_statement()
            otherwise = self.required_statement() if self.accept("ID", "else") else None
            return If(tok.line, cond, then, otherwise)
        if word.text == "while":
            self.expect("OP", "(")
            cond = self.expression()
            self.expect("OP", ")")
            return While(tok.line, cond, self.required_statement())
        if word.text == "switch":
            return self.switch(tok)
        if word.text in ("exit", "drop", "break"):
            if self.accept("OP", "("):
                self.expect("OP", ")")
            self.expect("OP", ";")
            return Keyword(tok.line, word.text)
        if word.text == "return":
            value = None
            if self.accept("OP", "("):
                value = self.expression()
                self.expect("OP", ")")
            self.expect("OP", ";")
            return Keyword(tok.line, "return", value)
        if word.text == "route":
            self.expect("OP", "(")
            name_tok = self.next()
            if name_tok.kind == "PV":
                name: Node = PVRef(name_tok.line, parse_pv(name_tok.text))
            elif name_tok.kind in ("ID", "STR", "NUM"):
                name = Const(name_tok.line, name_tok.text)
            else:
                raise CfgError(f"line {name_tok.line}: bad route name {name_tok.text!r}")
            params = []
            while self.accept("OP", ","):
                params.append(self.primary())
            self.expect("OP", ")")
            self.expect("OP", ";")
            return RouteCall(tok.line, name, params)
        if self.at("OP", "("):
            call = self.call_rest(word)
            self.expect("OP", ";")
            return CallStmt(tok.line, call)
        raise CfgError(f"line {tok.line}: unexpected {word.text!r}")

    def required_statement(self) -> Stmt:
        line = self.tok.line
        stmt = self.statement()
        return Block(line, []) if stmt is None else stmt  # "if (c) ;" is a null action (cfg.y)

    def switch(self, tok: Tok) -> Switch:
        self.expect("OP", "(")
        pv = parse_pv(self.expect("PV").text)
        self.expect("OP", ")")
        self.expect("OP", "{")
        cases: List[Case] = []
        while not self.accept("OP", "}"):
            if self.accept("ID", "default"):
                self.expect("OP", ":")
                case = Case(None, [], default=True)
            else:
                self.expect("ID", "case")
                case = Case(self.literal(), [])
                self.expect("OP", ":")
            while not (self.at("ID", "case") or self.at("ID", "default") or self.at("OP", "}")):
                stmt = self.statement()
                if stmt is not None:
                    case.body.append(stmt)
            cases.append(case)
        return Switch(tok.line, pv, cases)

    def call_rest(self, word: Tok) -> Call:
        self.expect("OP", "(")
        args: List[Node] = []
        if not self.at("OP", ")"):
            args.append(self.primary())
            while self.accept("OP", ","):
                args.append(self.primary())
        self.expect("OP", ")")
        return Call(word.line, word.text, args)

    # expressions, lowest precedence first (cfg.y: OR < AND < BIN_OR < BIN_AND < comparisons < + - < * / %)

    _LEVELS: Sequence[Tuple[str, ...]] = (
        ("||",),
        ("&&",),
        ("|",),
        ("&",),
        ("==", "!=", "=~", "!~", "<", ">", "<=", ">="),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def expression(self, level: int = 0) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.expression(level + 1)
        while self.tok.kind == "OP" and self.tok.text in self._LEVELS[level]:
            op = self.next()
            right = self.expression(level + 1)
            left = Binary(op.line, op.text, left, right)
        return left

    def unary(self) -> Node:
        tok = self.tok
        if self.accept("OP", "!"):
            return Unary(tok.line, "!", self.unary())
        if self.accept("OP", "-"):
            return Unary(tok.line, "-", self.unary())
        return self.primary(expression=True)

    def primary(self, expression: bool = False) -> Node:
        tok = self.next()
        if tok.kind == "STR":
            return Const(tok.line, tok.text)
        if tok.kind == "NUM":
            return Const(tok.line, int(tok.text))
        if tok.kind == "PV":
            return PVRef(tok.line, parse_pv(tok.text))
        if tok.kind == "OP" and tok.text == "-" and self.at("NUM"):
            return Const(tok.line, -int(self.next().text))
        if expression and tok.kind == "OP" and tok.text == "(":
            inner = self.expression()
            self.expect("OP", ")")
            return inner
        if expression and tok.kind == "OP" and tok.text == "[":
            inner = self.expression()
            self.expect("OP", "]")
            return Bracket(tok.line, inner)
        if tok.kind == "ID" and tok.text in ("NULL", "null"):
            return Const(tok.line, None)
        if tok.kind == "ID" and self.at("OP", "("):
            return self.call_rest(tok)
        if tok.kind == "ID" and not expression:
            return Const(tok.line, tok.text)  # a bare word argument (e.g. a flag or route name)
        raise CfgError(f"line {tok.line}: unexpected {tok.text!r} in an expression")


_SCRIPTS: Dict[str, Script] = {}


def parse(text: str) -> Script:
    """The cfg's routes and module parameters; parsed once per text (the cfg file's whole content)."""
    script = _SCRIPTS.get(text)
    if script is None:
        script = _SCRIPTS[text] = Parser(text).script(text)
    return script


# -- running -------------------------------------------------------------------------------

#: cfg lines run, for the mutation check's choice of tests (fakes/mutate.py); None: not collected.
COVERAGE: Optional[Set[int]] = None

_MATCH_FLAGS = re.IGNORECASE | re.ASCII


class Host(Protocol):
    """What the runner needs from the fake OpenSIPS: pseudo-variables and script functions."""

    def pv_get(self, ctx: Any, name: str, arg: Optional[str]) -> Any: ...
    def in_context(self, ctx: Any, context: str) -> Any: ...
    def pv_set(self, ctx: Any, name: str, arg: Optional[str], value: Value) -> None: ...
    def script_call(self, ctx: Any, name: str, args: List[Value], line: int) -> int: ...
    def warn(self, text: str) -> None: ...
    def entered(self, route: str) -> None: ...


class Runner:
    """Runs a cfg's routes for the fake host; one per host."""

    def __init__(self, script: Script, host: Host) -> None:
        self.script = script
        self.host = host
        self._regex: Dict[str, re.Pattern[str]] = {}

    def run(self, kind: str, name: str, ctx: Any) -> str:
        """Run a top-level route: "end" (it ran to its end or returned), "exit" or "drop"."""
        block = self.script.route(kind, name)
        try:
            self._block(block.body, ctx)
        except ReturnFromRoute as returned:
            return "exit" if returned.code == 0 else "end"
        except ExitScript:
            return "exit"
        except DropMessage:
            return "drop"
        except BreakLoop:
            raise CfgError(f"{kind}[{name}]: break outside a switch or while") from None
        return "end"

    # statements: each returns its code, as do_action does; 0 ends the script (run_action_list)

    def _block(self, body: List[Stmt], ctx: Any) -> int:
        ret = 1
        for stmt in body:
            ret = self._stmt(stmt, ctx)
            if ret == 0:
                raise ExitScript
        return ret

    def _stmt(self, stmt: Stmt, ctx: Any) -> int:
        if COVERAGE is not None:
            COVERAGE.add(stmt.line)
        if isinstance(stmt, Block):
            return self._block(stmt.body, ctx)
        if isinstance(stmt, If):
            if self.condition(stmt.cond, ctx) > 0:
                return self._stmt(stmt.then, ctx)
            if stmt.otherwise is not None:
                return self._stmt(stmt.otherwise, ctx)
            return 1
        if isinstance(stmt, Assign):
            value = self.value(stmt.expr, ctx)
            if stmt.op == "+=":
                value = self._added(stmt, self.pv_value(stmt.pv, ctx), value)
                if value is None:
                    return -1
            self.host.pv_set(ctx, stmt.pv.name, stmt.pv.arg, value)
            return 1
        if isinstance(stmt, CallStmt):
            return self.call(stmt.call, ctx)
        if isinstance(stmt, RouteCall):
            return self._route_call(stmt, ctx)
        if isinstance(stmt, Keyword):
            self._keyword(stmt, ctx)
        if isinstance(stmt, Switch):
            return self._switch(stmt, ctx)
        if isinstance(stmt, While):
            for _ in range(10000):  # OpenSIPS's max_while_loops
                if self.condition(stmt.cond, ctx) <= 0:
                    return 1
                try:
                    self._stmt(stmt.body, ctx)
                except BreakLoop:
                    return 1
            self.host.warn(f"line {stmt.line}: max while loops reached")
            return 1
        raise CfgError(f"line {stmt.line}: cannot run {stmt!r}")  # pragma: no cover - no other kind is made

    def _added(self, stmt: Assign, left: Value, right: Value) -> Value:
        """``+=`` (do_assign): numbers add, two strings join; a NULL side is an error (nothing assigned)."""
        if left is None or right is None:
            self.host.warn(f"ERROR: line {stmt.line}: NULL value(s) in complex assignment expressions (+=, -=, etc.)")
            return None
        if isinstance(left, str) and isinstance(right, str):
            return left + right
        if isinstance(left, int) and isinstance(right, int):
            return left + right
        self.host.warn(f"ERROR: line {stmt.line}: invalid operands {left!r} += {right!r}")
        return None

    def _keyword(self, stmt: Keyword, ctx: Any) -> None:
        if stmt.word == "exit":
            raise ExitScript
        if stmt.word == "drop":
            raise DropMessage
        if stmt.word == "break":
            raise BreakLoop
        code = 1
        if stmt.value is not None:
            value = self.value(stmt.value, ctx)
            code = value if isinstance(value, int) else (-1 if value is None else 1)
        raise ReturnFromRoute(code)

    def _switch(self, stmt: Switch, ctx: Any) -> int:
        value = self.pv_value(stmt.pv, ctx)
        matched = False
        ret = 1
        try:
            for case in stmt.cases:
                if not matched and not case.default:
                    if isinstance(case.label, str):
                        matched = value is not None and as_text(value).lower() == case.label.lower()
                    else:
                        matched = isinstance(value, int) and value == case.label
                if matched:
                    ret = self._block(case.body, ctx)
            if not matched:
                default = next((c for c in stmt.cases if c.default), None)
                if default is not None:
                    ret = self._block(default.body, ctx)
        except BreakLoop:
            return 1
        return ret

    def _route_call(self, stmt: RouteCall, ctx: Any) -> int:
        if stmt.params:
            raise CfgError(f"line {stmt.line}: route parameters are not known to the fake")
        if isinstance(stmt.name, PVRef):
            name = as_text(self.pv_value(stmt.name.pv, ctx))
        else:
            assert isinstance(stmt.name, Const)
            name = self.format(as_text(stmt.name.value), ctx)
        block = self.script.routes.get(("route", name))
        self.host.entered(name)
        if block is None:
            # action.c: "unknown route(...)", E_BUG; the script goes on
            self.host.warn(f"ALERT: unknown route({name})")
            ctx.rc = -1
            return -1
        try:
            ctx.rc = self._block(block.body, ctx)
        except ReturnFromRoute as returned:
            ctx.rc = returned.code
        return int(ctx.rc)

    # expressions

    def condition(self, node: Node, ctx: Any) -> int:
        """1 true, 0 false, -1 an error (false); a function returning 0 ends the script."""
        if isinstance(node, Binary) and node.op == "&&":
            left = self.condition(node.left, ctx)
            return left if left != 1 else self.condition(node.right, ctx)
        if isinstance(node, Binary) and node.op == "||":
            left = self.condition(node.left, ctx)
            return left if left != 0 else self.condition(node.right, ctx)
        if isinstance(node, Unary) and node.op == "!":
            inner = self.condition(node.operand, ctx)
            return inner if inner < 0 else int(not inner)
        if isinstance(node, Call):
            return 1 if self.call(node, ctx) > 0 else 0
        if isinstance(node, Bracket):
            value = self.value(node.expr, ctx)
            return 1 if (isinstance(value, int) and value) or (isinstance(value, str) and value) else 0
        if isinstance(node, Binary) and node.op in ("==", "!=", "=~", "!~", "<", ">", "<=", ">="):
            return self._compare(node, ctx)
        if isinstance(node, Const) and isinstance(node.value, int):
            return 1 if node.value else 0
        raise CfgError(f"line {node.line}: cannot use {node!r} as a condition")

    def _compare(self, node: Binary, ctx: Any) -> int:
        """route.c comp_scriptvar: the left side is a pseudo-variable."""
        if not isinstance(node.left, PVRef):
            raise CfgError(f"line {node.line}: the left side of {node.op} must be a pseudo-variable")
        op, left = node.op, self.pv_value(node.left.pv, ctx)
        right_node = node.right
        if isinstance(right_node, Const) and right_node.value is None:
            if op == "==":
                return 1 if left is None else 0
            return 0 if left is None else 1
        if isinstance(right_node, PVRef):
            right = self.pv_value(right_node.pv, ctx)
            if left is None or right is None:
                if left is None and right is None:
                    return 1 if op in ("==", "=~") else 0
                return 1 if op in ("!=", "!~") else 0
            if op in ("=~", "!~"):
                if not (isinstance(left, str) and isinstance(right, str)):
                    return self._invalid(node, left, right)
                found = self._regex_of(right).search(left) is not None
                return int(found == (op == "=~"))
            if isinstance(left, int) and isinstance(right, int):
                return _compare_values(op, left, right)
            return _compare_values(op, as_text(left), as_text(right))
        if not isinstance(right_node, Const):
            raise CfgError(f"line {node.line}: the right side of {op} must be a constant or a pseudo-variable")
        if left is None:
            return 1 if op in ("!=", "!~") else 0
        right_value = right_node.value
        if op in ("=~", "!~"):
            if not isinstance(right_value, str):
                return self._invalid(node, left, right_value)
            # regexec on the value as C sees it: up to the first NUL
            found = self._regex_of(right_value).search(as_text(left).split("\0", 1)[0]) is not None
            return int(found == (op == "=~"))
        if isinstance(right_value, str):
            return _compare_values(op, as_text(left), right_value)
        if not isinstance(left, int):
            return self._invalid(node, left, right_value)
        assert isinstance(right_value, int)
        return _compare_values(op, left, right_value)

    def _invalid(self, node: Binary, left: Value, right: Value) -> int:
        self.host.warn(f"WARNING: line {node.line}: invalid {node.op} operation: {left!r} against {right!r}")
        return -1

    def _regex_of(self, text: str) -> re.Pattern[str]:
        pattern = self._regex.get(text)
        if pattern is None:
            pattern = self._regex[text] = re.compile(text, _MATCH_FLAGS)
        return pattern

    def value(self, node: Node, ctx: Any) -> Value:
        if isinstance(node, Const):
            return node.value
        if isinstance(node, PVRef):
            return self.pv_value(node.pv, ctx)
        if isinstance(node, Bracket):
            return self.value(node.expr, ctx)
        if isinstance(node, Call):
            return self.call(node, ctx)
        if isinstance(node, Unary) and node.op == "-":
            inner = self.value(node.operand, ctx)
            if not isinstance(inner, int):
                raise CfgError(f"line {node.line}: minus of a non-number")
            return -inner
        if isinstance(node, Binary) and node.op in ("+", "-", "*", "/", "%", "&", "|"):
            left, right = self.value(node.left, ctx), self.value(node.right, ctx)
            if isinstance(left, int):
                if right is None:
                    right = 0
                if not isinstance(right, int):
                    self.host.warn(f"ERROR: line {node.line}: invalid numeric operands {left!r} {node.op} {right!r}")
                    return None
                return _arith(node.op, left, right)
            if node.op == "+":
                return as_text(left) + as_text(right)
            raise CfgError(f"line {node.line}: {node.op} on strings is not known to the fake")
        if isinstance(node, (Binary, Unary)):
            return self.condition(node, ctx)
        raise CfgError(f"line {node.line}: cannot evaluate {node!r}")

    def pv_value(self, pv: PV, ctx: Any) -> Value:
        value = self.host.pv_get(self.host.in_context(ctx, pv.context) if pv.context else ctx, pv.name, pv.arg)
        if value is ...:
            raise CfgError(f"unknown pseudo-variable {pv.text}")
        for transform in pv.transforms:
            if value is None:
                break  # a NULL value stays NULL (tr_eval_string)
            params = [self.format(p, ctx) if "$" in p else p for p in transform.params]
            value = TRANSFORMS[transform.name](value, *params)
        return value  # type: ignore[no-any-return]

    def format(self, text: str, ctx: Any) -> str:
        """pv_printf: the pseudo-variables in ``text`` printed, NULL as ``<null>``."""
        if "$" not in text:
            return text
        out, i = [], 0
        while True:
            start = text.find("$", i)
            if start < 0:
                out.append(text[i:])
                return "".join(out)
            out.append(text[i:start])
            end = pv_end(text, start)
            value = self.pv_value(parse_pv_cached(text[start:end]), ctx)
            out.append("<null>" if value is None else str(value))
            i = end

    def call(self, call: Call, ctx: Any) -> int:
        args: List[Value] = []
        for arg in call.args:
            if isinstance(arg, Const) and isinstance(arg.value, str):
                args.append(self.format(arg.value, ctx))
            else:
                args.append(self.value(arg, ctx))
        rc = self.host.script_call(ctx, call.name, args, call.line)
        ctx.rc = rc
        if rc == 0:
            raise ExitScript
        return rc


_PVS: Dict[str, PV] = {}


def parse_pv_cached(text: str) -> PV:
    pv = _PVS.get(text)
    if pv is None:
        pv = _PVS[text] = parse_pv(text)
    return pv


def _compare_values(op: str, left: Any, right: Any) -> int:
    return int(
        {
            "==": left == right,
            "!=": left != right,
            "<": left < right,
            ">": left > right,
            "<=": left <= right,
            ">=": left >= right,
        }[op]
    )


def _arith(op: str, left: int, right: int) -> Optional[int]:
    if op in ("/", "%") and right == 0:
        return None
    return {
        "+": left + right,
        "-": left - right,
        "*": left * right,
        "/": int(left / right) if right else 0,
        "%": left % right if right else 0,
        "&": left & right,
        "|": left | right,
    }[op]
