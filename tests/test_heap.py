"""route[gw_heap]: each worker's private memory laid out for OpenSIPS's allocator, on its first message.

F_MALLOC walks its size buckets one by one to the first that holds a free fragment; in a worker
whose free memory is one big block each small allocation walks ~2,000 of them (bench/README.md).
The route keeps 33 strings of growing size in $vars, each assignment leaving a hole of its size
just before the string it keeps: the sizes must grow (a smaller copy would fill an earlier hole)
and the route must run once per worker.  Its effect is speed (bench.instructions measures it);
what the fake can hold it to is the layout it asks for.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from fakes.runtime import Context, Gateway
from fakes.ua import Network


class Watching(Gateway):
    """The fake host, noting every $var(gw_heap_N) the cfg assigns, in order."""

    def __init__(self, **options: Any) -> None:
        self.layout: List[Tuple[str, Optional[int]]] = []
        super().__init__(**options)

    def pv_set(self, ctx: Context, name: str, arg: Optional[str], value: Any) -> None:
        if name == "var" and arg is not None and arg.startswith("gw_heap_"):
            self.layout.append((arg, None if value is None else len(str(value))))
        super().pv_set(ctx, name, arg, value)


def test_a_workers_first_message_lays_out_33_growing_strings_once() -> None:
    gateway = Watching()
    net = Network(gateway)
    alice, bob = net.phone("alice"), net.phone("bob")
    net.registered(alice, bob)
    assert [name for name, _ in gateway.layout] == [f"gw_heap_{i}" for i in range(33)]
    assert [size for _, size in gateway.layout] == [511 + 64 * i for i in range(33)]
    call = net.invite(alice, "bob")  # later messages of the worker: laid out already
    net.reply(call, bob, 200)
    net.bye(call, "caller")
    assert len(gateway.layout) == 33
    assert all(gateway.script_vars[f"gw_heap_{i}"] for i in range(33))
