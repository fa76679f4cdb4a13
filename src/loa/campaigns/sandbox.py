"""The bounded Jinja2 sandbox that message templates run in: no escapes, and no way to make a
process spend unbounded memory or time on one message.

Jinja's immutable sandbox stops attribute tricks, but leaves every operation free to build as
much as it is asked to: `'%0200000000d' % 1` builds 200 million characters in one C call, and
`{% set a = a ~ a %}` doubles a text each time it runs. Here every operation that can make
something larger than its inputs is checked *before* it runs, against what it would build:

- `*`, `+`, `%` and `**` (texts, lists, numbers), `~` (concatenation), list, tuple and dict
  literals, `str.format` / `format_map` and the string methods that pad or replace, and the
  filters that build text or lists (`replace`, `center`, `indent`, `wordwrap`, `join`, `format`,
  `batch`, `slice`, `sum`);
- text captured in a block (`{% set %}...{% endset %}`, macros, `{% filter %}`) is counted as
  it is written.

No text or list a template builds exceeds MAX_TEXT (a list counted to its last item, so nested
lists sharing one big list are counted in full), and a message's render takes at most MAX_STEPS
loop turns, calls and operations and RENDER_CPU_SECONDS of its thread's CPU time. Anything over
a limit raises jinja2's SecurityError, which the caller reports as a refusal.
"""

from __future__ import annotations

import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.nodes as nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

if TYPE_CHECKING:
    from jinja2.runtime import Context

MAX_REPEAT = 10_000  # the longest text or list a template may build with '*'
MAX_TEXT = 100_000  # the longest text, or the largest list, any operation may build
MAX_STEPS = 100_000  # loop turns, calls and checked operations in one message
RENDER_CPU_SECONDS = 0.25  # CPU time of its thread one message may take (steps take ~40 ms)
MAX_EXPONENT = 100
MAX_INT_BITS = 4096  # the largest number a template may compute (about 1233 digits)
_CPU_CHECK = 256  # steps between two looks at the CPU clock

_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)
_DIGITS = re.compile(r"\d+")
_FORMATTER = string.Formatter()


def refuse(reason: str) -> SecurityError:
    """The error a limit raises (the caller says 'refused by the sandbox: <reason>')."""
    return SecurityError(reason)


# --- the budget of one message ------------------------------------------------------------


class _Budget(threading.local):
    """The steps and CPU time left to the message being rendered on this thread."""

    armed = False  # outside a render (compiling, tests of Jinja itself): sizes are still checked
    steps = 0
    check_at = 0
    deadline = 0.0


_budget = _Budget()


class budget:
    """Context manager: render one message within MAX_STEPS and RENDER_CPU_SECONDS."""

    __slots__ = ()

    def __enter__(self) -> None:
        state = _budget
        state.armed = True
        state.steps = MAX_STEPS
        state.check_at = MAX_STEPS - _CPU_CHECK
        state.deadline = time.thread_time() + RENDER_CPU_SECONDS

    def __exit__(self, *exc: object) -> None:
        _budget.armed = False


def tick(cost: int = 1) -> None:
    """Count `cost` steps of the current message; refuse past its steps or CPU time."""
    state = _budget
    if not state.armed:
        return
    state.steps -= cost
    if state.steps < state.check_at:
        if state.steps < 0:
            raise refuse(f"the template takes more than {MAX_STEPS:,} steps for one message")
        state.check_at = state.steps - _CPU_CHECK
        if time.thread_time() > state.deadline:
            raise refuse(
                f"the template takes more than {RENDER_CPU_SECONDS * 1000:g} ms for one message"
            )


# --- sizes ------------------------------------------------------------------------------------


def size(value: Any, limit: int = MAX_TEXT) -> int:
    """Characters of a text; items of a list, tuple, set or dict counted down to the last text
    (a list holding one big list ten times counts it ten times). Stops soon after `limit`, so
    measuring costs at most about `limit` steps whatever the value."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list | tuple | set | frozenset | dict):
        return 1
    total = 0
    stack: list[Any] = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) or 1
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1
            stack.extend(item)
        else:
            total += 1
    return total


def text_size(value: Any) -> int:
    """At most how many characters str(value) has (a bound, not the exact length)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 330  # '%f' of 1e308
    # a container's repr: quotes, escapes (up to 10 characters for one), commas and brackets
    return 10 * size(value) + 2


def _check_text(built: int, what: str) -> None:
    if built > MAX_TEXT:
        raise refuse(f"{what} would build {built:,} characters (at most {MAX_TEXT:,})")


def _check_items(built: int, what: str) -> None:
    if built > MAX_TEXT:
        raise refuse(f"{what} would hold more than {MAX_TEXT:,} items and characters")


def _int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _largest(values: Iterable[Any]) -> int:
    largest = 0
    for value in values:
        if isinstance(value, Mapping):
            largest = max(largest, _largest(value.values()))
        else:
            largest = max(largest, text_size(value))
    return largest


def percent_size(fmt: str, values: Any) -> int:
    """At most how long `fmt % values` is; a '*' width or precision is refused."""
    args = values if isinstance(values, tuple) else (values,)
    largest = _largest(args)
    total = len(fmt)
    for width, precision, kind in _PERCENT.findall(fmt):
        if kind == "%":
            continue
        if "*" in (width, precision):
            raise refuse("a '*' width or precision in '%' formatting")
        total += int(width or 0) + int(precision or 0) + largest
    return total


def format_size(fmt: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> int:
    """At most how long `fmt.format(*args, **kwargs)` is; nested fields in a spec are refused."""
    largest = max(_largest(args), _largest(kwargs.values()))
    total = len(fmt)
    try:
        fields = list(_FORMATTER.parse(fmt))
    except ValueError:
        return total  # str.format raises the same error, with its own message
    for _, name, spec, _ in fields:
        if name is None:
            continue
        if spec and "{" in spec:
            raise refuse("a replacement field inside a format spec")
        total += sum(int(digits) for digits in _DIGITS.findall(spec or "")) + largest
    return total


# --- string methods and filters that build text -------------------------------------------


def _width(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str = "width") -> int:
    value = args[0] if args else kwargs.get(name, 0)
    return value if isinstance(value, int) else 0


def _replace_size(text: str, old: Any, new: Any, count: Any) -> int:
    if not (isinstance(old, str) and isinstance(new, str)):
        return len(text)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _check_str_method(owner: str, name: str, args: tuple[Any, ...], kw: Mapping[str, Any]) -> None:
    """Refuse a call of a string method that would build more than MAX_TEXT characters."""
    if name in ("center", "ljust", "rjust", "zfill"):
        built = max(len(owner), _width(args, kw))
    elif name == "expandtabs":
        built = len(owner) + owner.count("\t") * max(0, _width(args, kw, "tabsize"))
    elif name == "replace":
        old = args[0] if args else kw.get("old")
        new = args[1] if len(args) > 1 else kw.get("new")
        built = _replace_size(owner, old, new, args[2] if len(args) > 2 else kw.get("count", -1))
    elif name == "translate":
        table = args[0] if args else None
        longest = _largest(table.values()) if isinstance(table, Mapping) else 1
        built = len(owner) * max(1, longest)
    else:  # join
        built = sum(text_size(item) for item in args[0]) + len(owner) * len(args[0])
    _check_text(built, f"str.{name}")


_GROWING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace"})


def _bounded_method(method: Callable[..., Any], owner: str, name: str) -> Callable[..., Any]:
    def checked(*args: Any, **kwargs: Any) -> Any:
        tick()
        if name == "join" and args:
            args = (tuple(args[0]), *args[1:])  # measured, then joined: read it once
        _check_str_method(owner, name, args, kwargs)
        return method(*args, **kwargs)

    return checked


def _filters(originals: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The filters that can build more than they are given, each checked before it runs."""
    replace, center, indent = originals["replace"], originals["center"], originals["indent"]
    wordwrap, join, fmt = originals["wordwrap"], originals["join"], originals["format"]
    batch, slice_, sum_ = originals["batch"], originals["slice"], originals["sum"]

    @jinja2.pass_eval_context
    def do_replace(ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> Any:
        tick()
        text = s if isinstance(s, str) else _to_text(s)
        _check_text(_replace_size(text, old, new, count), "replace")
        return replace(ctx, s, old, new, count)

    def do_center(value: Any, width: int = 80) -> Any:
        tick()
        _check_text(width if isinstance(width, int) else 0, "center")
        return center(value, width)

    def do_indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
        tick()
        text = _to_text(s)
        step = width if isinstance(width, int) else len(str(width))
        _check_text(len(text) + (text.count("\n") + 1) * max(0, step), "indent")
        return indent(s, width, first, blank)

    @jinja2.pass_environment
    def do_wordwrap(env: Any, s: Any, width: int = 79, *args: Any, **kwargs: Any) -> Any:
        tick()
        text = _to_text(s)
        wrap = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
        wrap_len = len(str(wrap)) if wrap is not None else len(env.newline_sequence)
        lines = len(text) // max(1, width if isinstance(width, int) else 1) + text.count("\n")
        _check_text(len(text) + (lines + 1) * wrap_len, "wordwrap")
        return wordwrap(env, s, width, *args, **kwargs)

    @jinja2.pass_eval_context
    def do_join(ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        tick()
        items = tuple(value) if isinstance(value, Iterable) else value
        if attribute is None and isinstance(items, tuple):
            built = sum(text_size(item) for item in items) + len(str(d)) * len(items)
            _check_text(built, "join")
        return join(ctx, items, d, attribute)

    def do_format(value: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        _check_text(percent_size(_to_text(value), kwargs or args), "format")
        return fmt(value, *args, **kwargs)

    def do_batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        tick()
        if fill_with is not None and isinstance(linecount, int):
            _check_items(linecount, "batch")
        return batch(value, linecount, fill_with)

    @jinja2.pass_eval_context
    def do_slice(ctx: Any, value: Any, slices: int, fill_with: Any = None) -> Any:
        tick()
        if isinstance(slices, int):
            _check_items(slices, "slice")
        return slice_(ctx, value, slices, fill_with)

    @jinja2.pass_environment
    def do_sum(env: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        tick()
        if not isinstance(start, int | float):
            raise refuse("sum of texts or lists (join them instead)")
        return sum_(env, iterable, attribute, start)

    return {
        "replace": do_replace,
        "center": do_center,
        "indent": do_indent,
        "wordwrap": do_wordwrap,
        "join": do_join,
        "format": do_format,
        "batch": do_batch,
        "slice": do_slice,
        "sum": do_sum,
    }


def _to_text(value: Any) -> str:
    """str(value), once its size is known to be within bounds."""
    if isinstance(value, str):
        return value
    _check_text(text_size(value), "text of a value")
    return str(value)


# --- the hooks the compiled templates call ------------------------------------------------


@jinja2.pass_context
def _steps(context: Context, iterable: Any) -> Iterator[Any]:
    """A loop's items, each counted as a step (pass_context: never run at compile time)."""
    for item in iterable:
        tick()
        yield item


def _sized(value: Any) -> Any:
    """A list, tuple or dict literal, refused when it holds more than MAX_TEXT items."""
    tick()
    _check_items(size(value), "a list")
    return value


def _concat(parts: tuple[Any, ...]) -> str:
    """`a ~ b ~ c`: the texts joined, refused past MAX_TEXT characters."""
    tick()
    texts = [_to_text(part) for part in parts]
    _check_text(sum(map(len, texts)), "'~'")
    return "".join(texts)


class CountedBuffer(list[str]):
    """The text a block captures (`{% set %}`, a macro, `{% filter %}`), counted as written."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def append(self, piece: str) -> None:
        """Add one piece, refusing past MAX_TEXT characters in this block."""
        self.chars += len(piece)
        _check_text(self.chars, "a block")
        super().append(piece)

    def extend(self, pieces: Iterable[str]) -> None:
        """Add pieces, refusing past MAX_TEXT characters in this block."""
        for piece in pieces:
            self.append(piece)


class _Bounds(NodeTransformer):
    """Routes loops, literals and '~' of a parsed template through the checks above."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, "_loa_steps")
        return node

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _filter(node, "_loa_sized")

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _filter(node, "_loa_sized")

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _filter(node, "_loa_sized") if node.ctx == "load" else node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter(nodes.Tuple(node.nodes, "load", lineno=node.lineno), "_loa_concat")


def _filter(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with blocks capturing text into a CountedBuffer."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.counted_buffer()")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every growing operation checked (see the module's doc)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator
    counted_buffer = CountedBuffer

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters.update(_filters(self.filters))
        self.filters.update(_loa_steps=_steps, _loa_sized=_sized, _loa_concat=_concat)
        self.globals.clear()

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        tree = _Bounds().visit(source)
        tree.set_environment(self)
        return super()._generate(tree, name, filename, defer_init)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_repeat(left, right)
        elif operator == "+":
            if isinstance(left, str) and isinstance(right, str):
                _check_text(len(left) + len(right), "'+'")
            elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
                _check_items(size(left) + size(right), "'+'")
        elif operator == "%" and isinstance(left, str):
            _check_text(percent_size(left, right), "'%' formatting")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an object from a template: every call is a step."""
        tick()
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map`, and the string methods that pad or replace, checked."""
        owner = getattr(value, "__self__", None)
        name = getattr(value, "__name__", "")
        if not isinstance(owner, str) or not callable(value):
            return None
        if name in _GROWING_METHODS or name == "join":
            return _bounded_method(value, owner, name)
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        wrapped: Callable[..., str] = formatter
        mapping = name == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            tick()
            if mapping and len(args) == 1 and isinstance(args[0], Mapping):
                _check_text(format_size(owner, (), args[0]), "str.format_map")
            else:
                _check_text(format_size(owner, args, kwargs), "str.format")
            return wrapped(*args, **kwargs)

        return checked


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(exponent, int | float) and abs(exponent) > MAX_EXPONENT:
        raise refuse(f"exponent larger than {MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        bits = base.bit_length() * exponent
        if bits > MAX_INT_BITS:
            raise refuse(f"a number of about {bits:,} bits (at most {MAX_INT_BITS:,})")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            built = size(seq, MAX_REPEAT) * count
            if built > MAX_REPEAT:
                raise refuse(
                    f"'*' would repeat to {built:,} items or characters (at most {MAX_REPEAT:,})"
                )
            return
    bits = _int_bits(left) + _int_bits(right)
    if bits > MAX_INT_BITS:
        raise refuse(f"a number of about {bits:,} bits (at most {MAX_INT_BITS:,})")
