"""The part of Go's text/template that ``--format`` needs, and docker's table output.

Vocabulary:

*action*
    ``{{ ... }}`` in the text (``{{-``/``-}}`` trim the spaces around it).
*pipeline*
    commands joined by ``|``; each command is a function name with
    arguments (``json .``, ``index .Config.Labels "k"``, ``join .Args ","``)
    or a value (``.Field.Sub``, ``.``, ``$``, a string or a number). The
    value of a stage becomes the last argument of the next.
*field*
    ``.Names`` looks a key up in a dict (missing: ``<no value>``, as Go
    prints a missing map key); a callable value is called with the
    command's arguments (docker's ``.Label "k"`` method).
*control*
    ``if``/``else if``/``else``/``end``, ``range`` (``.`` is each element),
    ``with``.
*table*
    a format starting with ``table`` prints a header row (the template run
    on a dict of column titles) and aligns columns as docker's tabwriter
    (minimum width 10, padding 3).
"""

from __future__ import annotations

import json
import re

from bulkhead.cli.fmt import expand_format, tabwrite

TYPE_CHECKING = False  # typing and dataclasses cost milliseconds at every `ps`
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class TemplateError(Exception):
    """The template cannot be parsed or run (docker: 'template parsing error')."""


_MISSING = object()

# --- lexing ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<field>(?:\$)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.|\$)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>[|()])
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unexpected {text[pos:]!r} in command")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# --- the tree -------------------------------------------------------------------


class _Text:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Action:
    __slots__ = ("pipe",)

    def __init__(self, pipe: list[list[tuple[str, Any]]]) -> None:
        self.pipe = pipe


class _Block:
    __slots__ = ("body", "kind", "orelse", "pipe")

    def __init__(self, kind: str, pipe: list[list[tuple[str, Any]]]) -> None:
        self.kind = kind  # if | range | with
        self.pipe = pipe
        self.body: list[Any] = []
        self.orelse: list[Any] = []


def _parse_pipe(tokens: list[tuple[str, str]]) -> list[list[tuple[str, Any]]]:
    pipe: list[list[tuple[str, Any]]] = []
    cmd: list[tuple[str, Any]] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        i += 1
        if kind == "op" and text == "|":
            if not cmd:
                raise TemplateError("missing command before '|'")
            pipe.append(cmd)
            cmd = []
        elif kind == "op" and text == "(":
            depth, j = 1, i
            while j < len(tokens) and depth:
                if tokens[j] == ("op", "("):
                    depth += 1
                elif tokens[j] == ("op", ")"):
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError("unclosed left paren")
            inner = _parse_pipe(tokens[i : j - 1])
            i = j
            if i < len(tokens) and tokens[i][0] == "field" and tokens[i][1].startswith("."):
                # (pipeline).Field: a field of the pipeline's value
                cmd.append(("chain", (inner, tokens[i][1])))
                i += 1
            else:
                cmd.append(("pipe", inner))
        elif kind == "op":
            raise TemplateError(f"unexpected {text!r}")
        elif kind == "str":
            cmd.append(("lit", _unquote(text)))
        elif kind == "num":
            cmd.append(("lit", float(text) if "." in text else int(text)))
        elif kind == "field":
            cmd.append(("field", text))
        else:
            if text in ("true", "false"):
                cmd.append(("lit", text == "true"))
            elif text == "nil":
                cmd.append(("lit", None))
            else:
                cmd.append(("func", text))
    if cmd:
        pipe.append(cmd)
    elif pipe:
        raise TemplateError("missing command after '|'")
    if not pipe:
        raise TemplateError("missing value for command")
    return pipe


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return str(json.loads(text))


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def parse(source: str) -> list[Any]:
    """Parse a template into a node list."""
    root: list[Any] = []
    stack: list[tuple[_Block, list[Any]]] = []
    current = root
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            current.append(_Text(text))
        trim_next = bool(m.group(3))
        pos = m.end()
        body = m.group(2).strip()
        if body.startswith("/*"):
            continue
        word, _, rest = body.partition(" ")
        if word in ("if", "range", "with"):
            block = _Block(word, _parse_pipe(_tokens(rest)))
            current.append(block)
            stack.append((block, current))
            current = block.body
        elif word == "else":
            if not stack:
                raise TemplateError("unexpected {{else}}")
            block, _parent = stack[-1]
            rest = rest.strip()
            if rest.startswith("if "):
                inner = _Block("if", _parse_pipe(_tokens(rest[3:])))
                block.orelse.append(inner)
                # the chained `else if` closes with the outer block's {{end}}
                stack[-1] = (inner, _parent)
                current = inner.body
            else:
                current = block.orelse
        elif word == "end":
            if not stack:
                raise TemplateError("unexpected {{end}}")
            _block, current = stack.pop()
        else:
            current.append(_Action(_parse_pipe(_tokens(body))))
    if stack:
        raise TemplateError(f"unexpected EOF: unclosed {{{{{stack[-1][0].kind}}}}}")
    tail = source[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action")
    if trim_next:
        tail = tail.lstrip()
    if tail:
        current.append(_Text(tail))
    return root


# --- evaluation -----------------------------------------------------------------


def go_str(value: Any) -> str:
    """A value printed as Go's fmt ``%v`` prints the decoded JSON docker formats."""
    if value is _MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # Go's %v of a float64: shortest digits, exponent form from 1e21 (and for
        # integral values from 1e6, as in the JSON numbers docker decodes).
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:g}" if value.is_integer() else repr(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def go_json(value: Any) -> str:
    """docker's template ``json``: compact, not HTML-escaped (SetEscapeHTML(false))."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _truthy(value: Any) -> bool:
    if value is _MISSING or value is None:
        return False
    if isinstance(value, bool | int | float | str | list | dict | tuple):
        return bool(value)
    return True


def _index(container: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(container, dict):
            container = container.get(key, _MISSING)
            if container is _MISSING:
                return _MISSING
        elif isinstance(container, list | tuple | str):
            container = container[int(key)]
        else:
            raise TemplateError(f"can't index item of type {type(container).__name__}")
    return container


def _printf(fmt: str, *args: Any) -> str:
    py = re.sub(r"%v|%s|%d|%q", lambda m: "%r" if m.group() == "%q" else "%s", fmt)
    vals = tuple(
        json.dumps(a) if spec == "%q" else go_str(a)
        for a, spec in zip(args, re.findall(r"%[vsdq]", fmt), strict=False)
    )
    return py.replace("%r", "%s") % vals


def _truncate(value: Any, n: Any) -> str:
    return go_str(value)[: int(n)]


def _pad(value: Any, left: Any, right: Any) -> str:
    return " " * int(left) + go_str(value) + " " * int(right)


FUNCS: dict[str, Callable[..., Any]] = {
    "json": go_json,
    "index": _index,
    "len": lambda v: len(v),
    "upper": lambda v: go_str(v).upper(),
    "lower": lambda v: go_str(v).lower(),
    "title": lambda v: go_str(v).title(),
    "join": lambda v, sep: sep.join(go_str(x) for x in (v or [])),
    "split": lambda v, sep: go_str(v).split(sep),
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "printf": _printf,
    "truncate": _truncate,
    "pad": _pad,
    "not": lambda v: not _truthy(v),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
}


class _Scope:
    def __init__(self, dot: Any, root: Any) -> None:
        self.dot = dot
        self.root = root


def _field(scope: _Scope, path: str) -> Any:
    if path == ".":
        return scope.dot
    if path == "$":
        return scope.root
    value = scope.root if path.startswith("$") else scope.dot
    for name in path.lstrip("$").split(".")[1:]:
        if isinstance(value, dict):
            value = value.get(name, _MISSING)
        elif value is _MISSING or value is None:
            raise TemplateError(f"nil pointer evaluating {path}")
        else:
            value = getattr(value, name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _operand(scope: _Scope, op: tuple[str, Any]) -> Any:
    kind, value = op
    if kind == "lit":
        return value
    if kind == "field":
        return _field(scope, value)
    if kind == "pipe":
        return _run_pipe(scope, value)
    if kind == "chain":
        inner, path = value
        return _field(_Scope(_run_pipe(scope, inner), scope.root), path)
    raise TemplateError(f"function {value!r} used as a value")


def _run_pipe(scope: _Scope, pipe: list[list[tuple[str, Any]]]) -> Any:
    result: Any = _MISSING
    for n, cmd in enumerate(pipe):
        head = cmd[0]
        args = [_operand(scope, op) for op in cmd[1:]]
        if n:
            args.append(result)
        if head[0] == "func":
            fn = FUNCS.get(head[1])
            if fn is None:
                raise TemplateError(f'function "{head[1]}" not defined')
            try:
                result = fn(*args)
            except TemplateError:
                raise
            except Exception as exc:
                raise TemplateError(f"error calling {head[1]}: {exc}") from None
        else:
            value = _operand(scope, head)
            if callable(value):
                result = value(*args)
            elif args:
                raise TemplateError(f"{head[1]} is not a method but has arguments")
            else:
                result = value
    return result


def _render(nodes: list[Any], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Action):
            value = _run_pipe(scope, node.pipe)
            out.append(value if isinstance(value, str) else go_str(value))
        else:
            value = _run_pipe(scope, node.pipe)
            if node.kind == "if":
                _render(node.body if _truthy(value) else node.orelse, scope, out)
            elif node.kind == "with":
                if _truthy(value):
                    _render(node.body, _Scope(value, scope.root), out)
                else:
                    _render(node.orelse, scope, out)
            else:
                items: list[Any]
                if isinstance(value, dict):
                    items = [value[k] for k in sorted(value)]
                elif isinstance(value, list | tuple):
                    items = list(value)
                elif not _truthy(value):
                    items = []
                else:
                    raise TemplateError(f"range can't iterate over {go_str(value)}")
                if not items:
                    _render(node.orelse, scope, out)
                for item in items:
                    _render(node.body, _Scope(item, scope.root), out)


class Template:
    """A parsed template: ``execute(data) -> str``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes = parse(source)

    def execute(self, data: Any) -> str:
        out: list[str] = []
        _render(self.nodes, _Scope(data, data), out)
        return "".join(out)


# --- docker's format option -----------------------------------------------------


def render_list(fmt: str, items: list[Any], headers: dict[str, str] | None = None) -> str:
    """Each item through ``fmt`` (docker's ``--format``); a table gets headers and alignment."""
    source, table = expand_format(fmt)
    tpl = Template(source)
    lines: list[str] = []
    if table and headers is not None:
        lines.append(tpl.execute(headers))
    lines.extend(tpl.execute(item) for item in items)
    text = "\n".join(lines)
    if table:
        text = tabwrite(text.split("\n"))
    return text + "\n" if text else ""
