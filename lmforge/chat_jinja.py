"""Hugging Face chat templates (Jinja programs read from a model's files) rendered within bounds.

transformers renders them in Jinja's ImmutableSandboxedEnvironment, which keeps a template away from
Python's internals but not from running for hours or building a text of gigabytes: loops over
`range(10**5)` nested three deep, `'x' * 10**10`, a string doubled in a loop, a macro calling itself.
Here one budget is kept per render, with limit = RENDER_CHARS + 2 x the conversation's characters
(far above any prompt a model could take):
  time   every loop step, call, filter, arithmetic operation and written piece checks the clock
         against RENDER_SECONDS;
  size   no value made (string, list or dict counted with what it holds, a number by its digits)
         and no output is over `limit` characters; everything made and written (captured blocks
         and macros included, each container by its own length) adds up to at most WORK_FACTOR x
         limit, which bounds the memory a render can take. Operations that multiply their input
         (`*`, `**`, format widths, replace, join, indent, wordwrap, expandtabs, integer arguments)
         are checked before they run, the rest as soon as they return.
Going over a bound, or any other exception while rendering, is one LmforgeError.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import time
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from lmforge.errors import LmforgeError

RENDER_SECONDS = 2.0  # chat templates render in milliseconds
RENDER_CHARS = 1 << 20
WORK_FACTOR = 64
_WIDE_FORMAT = re.compile(r"\d{7,}")  # a width or precision of a million or more in a format string
_FIX = "fix chat_template in tokenizer_config.json (or chat_template.jinja) or remove it to use User:/Assistant: turns"


class _Exceeded(Exception):
    """A render went over one of its bounds (the message says which)."""


def _size(value, cap: int) -> int:
    """Characters a value holds, counted up to just past `cap`: a string's length, a container's
    items with what they hold (a list may hold one string many times over), an integer's digits."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if not isinstance(value, (list, tuple, set, frozenset)):
        return 0
    total = len(value)
    for item in value:
        if total > cap:
            break
        total += _size(item, cap - total)
    return total


# Filters that do not turn their input into text: a container they are given is not measured
# (that would cost a pass over `messages` at every `messages|length`).
_STRUCTURAL = {"length", "count", "list", "first", "last", "selectattr", "rejectattr", "select", "reject",
               "map", "sort", "unique", "reverse", "batch", "slice", "groupby", "dictsort", "items", "attr",
               "default", "d", "min", "max", "sum", "random", "abs", "int", "float", "round"}


class _Budget:
    def __init__(self, limit: int):
        self.deadline, self.limit, self.work = time.monotonic() + RENDER_SECONDS, limit, 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Exceeded(f"it ran for over {RENDER_SECONDS:g} s")

    def fits(self, size: int, what: str = "a value") -> None:
        if size > self.limit:
            raise _Exceeded(f"it made {what} of about {size:,} characters (the bound is {self.limit:,})")

    def measure(self, value, what: str = "a value") -> None:
        self.fits(_size(value, self.limit), what)

    def spend(self, value):
        """A value just made, checked against the bounds (a container by its own length: what it
        holds was checked when it was made)."""
        self.tick()
        size = len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else _size(value, self.limit)
        self.fits(size)
        self.work += size
        if self.work > WORK_FACTOR * self.limit:
            raise _Exceeded(f"it made over {WORK_FACTOR * self.limit:,} characters in all")
        return value


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("chat_template_budget")


def _check_format(fmt) -> None:
    if isinstance(fmt, str) and _WIDE_FORMAT.search(fmt):
        raise _Exceeded("it asked a format for a width of a million characters or more")


def _grows_to(name: str, value, args: tuple, kwargs: dict, cap: int) -> int:
    """The result size of an operation that multiplies its input, estimated before it runs (0: not one of them)."""
    def arg(i, key, default):
        return args[i] if len(args) > i else kwargs.get(key, default)

    if isinstance(value, (list, tuple)) and name == "join":  # (a generator's items were checked as they were made)
        return _size(value, cap) + len(value) * len(str(arg(0, "d", "")))
    if not isinstance(value, str):
        return 0
    if name == "join":  # str.join: the separator is the value
        items = arg(0, "iterable", ())
        return _size(items, cap) + len(items) * len(value) if isinstance(items, (list, tuple)) else 0
    if name == "replace":
        old, new = str(arg(0, "old", "")), str(arg(1, "new", ""))
        return len(value) + (value.count(old) if old else len(value) + 1) * len(new)
    if name == "indent":
        width = arg(0, "width", 4)
        return len(value) + (value.count("\n") + 1) * (width if isinstance(width, int) else len(str(width)))
    if name == "wordwrap":
        width, wrap = arg(0, "width", 79), arg(2, "wrapstring", None)
        return len(value) + (len(value) // max(int(width), 1) + 1) * len(wrap or "\n")
    if name == "expandtabs":
        return len(value) + value.count("\t") * int(arg(0, "tabsize", 8))
    return 0


def _before(name: str, value, args: tuple, kwargs: dict) -> None:
    """Refuse, before it runs, an operation whose result would be over the size bound."""
    budget = _BUDGET.get()
    budget.tick()
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and abs(a) > budget.limit:  # widths, counts
            budget.fits(abs(a), "an argument")
    if name in ("format", "format_map"):
        _check_format(value)
    budget.fits(_grows_to(name, value, args, kwargs, budget.limit))


def _metered_filter(name: str, f):
    @functools.wraps(f)  # keeps jinja's pass_context / pass_environment mark
    def run(*args, **kwargs):
        pos = next((i for i, a in enumerate(args) if not isinstance(
            a, (jinja2.runtime.Context, jinja2.nodes.EvalContext, jinja2.Environment))), len(args))
        if pos < len(args):
            if name not in _STRUCTURAL:
                _BUDGET.get().measure(args[pos])
            _before(name, args[pos], args[pos + 1:], kwargs)
        return _BUDGET.get().spend(f(*args, **kwargs))
    return run


@jinja2.pass_context  # never folded into a constant at compile time, when there is no budget
def _each(_, iterable):
    budget = _BUDGET.get()
    for item in iterable:
        budget.tick()
        yield item


@jinja2.pass_context
def _made(_, value):
    return _BUDGET.get().spend(value)


@jinja2.pass_context
def _measured(_, value):
    _BUDGET.get().measure(value)
    return value


@jinja2.pass_context
def _written(_, value):
    _BUDGET.get().measure(value)  # before str() spells out a list that holds a string a million times
    return _BUDGET.get().spend(str(value))


class _Metered(NodeTransformer):
    """Every loop's items, every '~' and every piece written pass through the budget."""

    def _wrap(self, node, name):
        return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = self._wrap(node.iter, "_each")
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        node.nodes = [self._wrap(n, "_measured") for n in node.nodes]
        return self._wrap(node, "_made")

    def visit_Output(self, node):
        node = self.generic_visit(node)
        node.nodes = [self._wrap(n, "_written") for n in node.nodes]
        return node


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own naming, free for template kwargs)
        _before(getattr(__obj, "__name__", ""), getattr(__obj, "__self__", None), args, kwargs)
        return _BUDGET.get().spend(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, operator, left, right):
        budget = _BUDGET.get()
        budget.tick()
        if operator == "*" and isinstance(right, int) and not isinstance(left, int):
            budget.fits(_size(left, budget.limit) * right)
        elif operator == "*" and isinstance(left, int) and not isinstance(right, int):
            budget.fits(_size(right, budget.limit) * left)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            budget.fits(right * abs(left).bit_length() // 3, "a number")
        elif operator == "%":
            _check_format(left)
        result = super().call_binop(context, operator, left, right)
        budget.measure(result)
        return budget.spend(result)


def _raise_exception(message):
    raise LmforgeError(f"the model's chat template refused the conversation: {message}")


@functools.lru_cache(maxsize=1)
def _environment() -> _Environment:
    """transformers' chat-template environment (trim_blocks, lstrip_blocks, loop controls, tojson,
    raise_exception, strftime_now), every filter metered; lipsum goes (pages of text on demand)."""
    env = _Environment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.filters = {name: _metered_filter(name, f) for name, f in env.filters.items()}
    env.filters.update(_each=_each, _made=_made, _measured=_measured, _written=_written)
    env.globals.pop("lipsum", None)
    env.globals.update(raise_exception=_raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
    return env


@functools.lru_cache(maxsize=16)
def _compiled(source: str) -> jinja2.Template:
    env = _environment()
    return env.from_string(_Metered().visit(env.parse(source)))


def render(source: str, variables: dict, conversation_chars: int) -> str:
    """The text of the template `source` over `variables`, within the bounds of this module's docstring."""
    budget = _Budget(RENDER_CHARS + 2 * conversation_chars)
    token = _BUDGET.set(budget)
    try:
        out, size = [], 0
        for piece in _compiled(source).generate(**variables):
            size += len(piece)
            budget.fits(size, "a text")
            out.append(piece)
        return "".join(out)
    except LmforgeError:
        raise
    except _Exceeded as e:
        raise LmforgeError(f"the model's chat template was stopped because {e}; {_FIX}") from None
    except Exception as e:  # a template is a program: ZeroDivisionError, RecursionError, TypeError ... are its faults
        why = (str(e).splitlines() or [""])[0][:200]
        raise LmforgeError(f"the model's chat template fails ({type(e).__name__}: {why}); {_FIX}") from None
    finally:
        _BUDGET.reset(token)
