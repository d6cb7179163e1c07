"""runc's command-line grammar, table-driven, for ``bulkhead-runtime``.

runc parses its command line with urfave/cli v1 on top of Go's ``flag``
package, and the programs that drive an OCI runtime (containerd's go-runc,
conmon, Podman) write their command lines for that grammar. It is not
argparse's (nor getopt's):

- a flag is ``-name`` or ``--name``, long or short alike (``-bundle x``,
  ``--bundle=x``, ``-b x``); short flags do not combine (``-td`` is one
  unknown flag);
- a flag that takes a value takes the next word whatever it looks like
  (``--pid-file --x`` sets ``--x``), or the text after ``=``;
- a boolean flag never takes the next word, but accepts ``=true|false``
  (and Go's ``1``, ``t``, ``F``, ``FALSE`` ...): ``--detach=false``;
- parsing stops at the first positional argument (everything after it is
  positional, dashes or not: ``exec ID sh -c x`` runs ``sh -c x``) and at
  ``--``, which is dropped; a lone ``-`` is positional;
- global flags go before the verb; the verb's flags after it;
- except for ``exec`` and ``ps``, urfave/cli first moves the verb's *known*
  flags (with the value that follows a value flag) in front of its
  positionals, so ``delete ID --force`` and ``kill ID KILL --all`` work
  while ``delete ID -x`` is an argument-count error, not a flag error;
- errors, exit codes and streams are runc's: ``Incorrect Usage`` and the
  usage text on stdout, the error itself through the log (stderr by
  default), exit status 1 (3 for an unknown verb).

The other reason this is not argparse: the runtime's command line sits on
every container's start path (``create``, ``start``, ``delete`` are three
fresh processes), and ``import argparse`` with building its parser cost
7-9 ms of a ~90 ms start (argparse imports ``re``, ``gettext``, ``locale``;
its help formatter ``shutil``). This module imports nothing; parsing a
command line is a few dictionary lookups, and help text is only rendered
for ``--help`` and usage errors.

One deliberate difference from urfave/cli: when it moves a boolean flag
in front of the positionals it also moves the word after it, as if it were
the flag's value (``kill ID --all KILL`` signals container ``KILL`` with
signal ``ID``); here a boolean flag never takes the next word.
"""

from __future__ import annotations

# Not ``typing``: on Python 3.11 it imports ``re``. mypy takes any name
# TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# Flag kinds.
BOOL = "bool"
STRING = "string"
INT = "int"
LIST = "list"  # repeatable string flag: every use appends

# Positional kinds.
ONE = "one"  # required
OPTIONAL = "optional"  # may be missing: the default
REST = "rest"  # all the remaining words, as a list
SOME = "some"  # like REST, at least one

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class Namespace:
    """The parsed command line: one attribute per flag and positional, plus ``verb``."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Namespace) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"Namespace({items})"


class UsageError(Exception):
    """A command line the program cannot run.

    ``message`` goes to the log (stderr by default), ``usage`` (possibly
    empty) to stdout first, and the program exits with ``code``.
    ``namespace`` holds the global flags when they were parsed, so that the
    error can be logged where ``--log`` says; it is None otherwise.
    """

    def __init__(
        self, message: str, usage: str = "", code: int = 1, namespace: Namespace | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.code = code
        self.namespace = namespace


class Flag:
    """One flag: its names (long first), kind, default and help line.

    ``dest`` defaults to the first name with ``-`` as ``_``. ``choices``
    are checked once the command line is otherwise valid; ``invalid`` is
    the message then (``{value}`` is replaced by the value given).
    """

    __slots__ = ("choices", "default", "dest", "help", "hidden", "invalid", "kind", "names")

    def __init__(
        self,
        names: str,
        kind: str = STRING,
        default: Any = None,
        help: str = "",
        *,
        dest: str = "",
        choices: tuple[str, ...] = (),
        invalid: str = "",
        hidden: bool = False,
    ) -> None:
        self.names = tuple(n.strip() for n in names.split(","))
        self.kind = kind
        if kind == BOOL and default is None:
            default = False
        self.default = default
        self.help = help
        self.dest = dest or self.names[0].replace("-", "_")
        self.choices = choices
        self.invalid = invalid or 'invalid value "{value}" for flag -' + self.names[0]
        self.hidden = hidden

    def initial(self) -> Any:
        """The value before the command line sets it (a fresh list for LIST)."""
        return list(self.default or ()) if self.kind == LIST else self.default

    def render(self) -> str:
        """The names column of the help text: ``--bundle value, -b value``."""
        suffix = "" if self.kind == BOOL else " value"
        return ", ".join(("-" if len(n) == 1 else "--") + n + suffix for n in self.names)

    def render_help(self) -> str:
        if self.kind == STRING and self.default:
            return f'{self.help} (default: "{self.default}")'
        if self.kind == INT:
            return f"{self.help} (default: {self.default})"
        return self.help


class Arg:
    """A positional argument of a command."""

    __slots__ = ("default", "dest", "kind")

    def __init__(self, dest: str, kind: str = ONE, default: Any = None) -> None:
        self.dest = dest
        self.kind = kind
        self.default = default


class Command:
    """A verb: its flags, its positionals (which give its argument count) and help."""

    __slots__ = (
        "aliases",
        "args",
        "args_usage",
        "flags",
        "help",
        "max_args",
        "min_args",
        "name",
        "reorder",
    )

    def __init__(
        self,
        name: str,
        help: str,
        args_usage: str = "",
        flags: Sequence[Flag] = (),
        args: Sequence[Arg] = (),
        *,
        reorder: bool = True,
        aliases: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.help = help
        self.args_usage = args_usage
        self.flags = tuple(flags)
        self.args = tuple(args)
        self.reorder = reorder
        self.aliases = aliases
        self.min_args = sum(1 for a in self.args if a.kind in (ONE, SOME))
        self.max_args: int | None = (
            None if any(a.kind in (REST, SOME) for a in self.args) else len(self.args)
        )


#: urfave/cli's ``--help, -h``, added to the program's and every verb's flags.
HELP_FLAG = Flag("help, h", BOOL, help="show help")


class App:
    """A program: global flags, verbs, and the parse of a whole command line."""

    def __init__(
        self,
        name: str,
        help: str,
        version: str,
        flags: Sequence[Flag],
        commands: Sequence[Command],
    ) -> None:
        self.name = name
        self.help = help
        self.version = version
        self.flags = (*flags, HELP_FLAG)
        self.commands = tuple(commands)
        self._by_name = {n: c for c in self.commands for n in (c.name, *c.aliases)}

    def command(self, name: str) -> Command | None:
        return self._by_name.get(name)

    # ------------------------------------------------------------ parsing

    def parse(self, argv: Sequence[str]) -> Namespace:
        """The command line ``argv`` (without the program name), as runc reads it.

        The order of the checks is urfave/cli's: global flags; ``--help``
        or ``--version`` (the namespace then has ``verb`` None); global
        choices; the verb (``help``/``h`` included: ``verb`` is ``help``,
        ``topic`` the verb asked about or None); the verb's flags; its
        ``--help`` (``help`` true, nothing more checked); its argument
        count; its choices. Raises :class:`UsageError`.
        """
        ns = Namespace(verb=None)
        for f in self.flags:
            setattr(ns, f.dest, f.initial())
        try:
            rest = parse_flags(self.flags, argv, ns)
        except UsageError as exc:
            exc.usage = f"Incorrect Usage. {exc.message}\n\n" + self.help_text()
            raise
        if ns.help or ns.version:
            return ns
        # runc checks --log-format before it opens --log: that error goes to stderr.
        _check_choices(self.flags, ns, None)
        if not rest:
            ns.verb = "help"
            ns.topic = None
            return ns
        cmd = self.command(rest[0])
        if cmd is None:
            raise UsageError(f"No help topic for '{rest[0]}'", code=3, namespace=ns)
        ns.verb = cmd.name
        flags = (*cmd.flags, HELP_FLAG)
        for f in flags:
            setattr(ns, f.dest, f.initial())
        args = rest[1:]
        if cmd.reorder:
            args = reorder(flags, args)
        try:
            args = parse_flags(flags, args, ns)
        except UsageError as exc:
            exc.usage = f"Incorrect Usage: {exc.message}\n\n" + self.help_text(cmd.name)
            exc.namespace = ns
            raise
        if ns.help:
            return ns
        error = ""
        if cmd.min_args == cmd.max_args:
            if len(args) != cmd.min_args:
                error = f"requires exactly {cmd.min_args} argument(s)"
        elif len(args) < cmd.min_args:
            error = f"requires a minimum of {cmd.min_args} argument(s)"
        elif cmd.max_args is not None and len(args) > cmd.max_args:
            error = f"requires a maximum of {cmd.max_args} argument(s)"
        if error:
            raise UsageError(
                f'{self.name}: "{cmd.name}" {error}',
                "Incorrect Usage.\n\n" + self.help_text(cmd.name),
                namespace=ns,
            )
        for i, a in enumerate(cmd.args):
            if a.kind in (REST, SOME):
                setattr(ns, a.dest, list(args[i:]))
            else:
                setattr(ns, a.dest, args[i] if i < len(args) else a.default)
        if cmd.name == "help" and ns.topic is not None and self.command(ns.topic) is None:
            raise UsageError(f"No help topic for '{ns.topic}'", code=3, namespace=ns)
        _check_choices(cmd.flags, ns, ns)
        return ns

    # --------------------------------------------------------------- help

    def help_text(self, verb: str | None = None) -> str:
        """urfave/cli's help of the program, or of one verb."""
        cmd = self.command(verb) if verb else None
        if cmd is None:
            rows = [(", ".join((c.name, *c.aliases)), c.help) for c in self.commands]
            return (
                f"NAME:\n   {self.name} - {self.help}\n\n"
                f"USAGE:\n   {self.name} [global options] command [command options] "
                "[arguments...]\n\n"
                f"VERSION:\n   {self.version}\n\n"
                f"COMMANDS:\n{_table(rows)}\n"
                f"GLOBAL OPTIONS:\n{_flag_table(self.flags)}"
            )
        visible = [f for f in cmd.flags if not f.hidden]
        usage = f"{self.name} {cmd.name}" + (" [command options]" if visible else "")
        usage += f" {cmd.args_usage}" if cmd.args_usage else " [arguments...]"
        text = f"NAME:\n   {self.name} {cmd.name} - {cmd.help}\n\nUSAGE:\n   {usage}\n"
        if visible:
            text += f"\nOPTIONS:\n{_flag_table(visible)}"
        return text


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(left) for left, _ in rows) + 2
    return "".join(f"   {left.ljust(width)}{right}".rstrip() + "\n" for left, right in rows)


def _flag_table(flags: Sequence[Flag]) -> str:
    return _table([(f.render(), f.render_help()) for f in flags if not f.hidden])


# -------------------------------------------------------------- the grammar


def _flag_name(arg: str) -> str | None:
    """urfave/cli's ``argIsFlag``: the name in ``-name``, ``--name=v`` (None: not a flag)."""
    if arg in ("-", "--") or not arg.startswith("-"):
        return None
    name = arg[2:] if arg.startswith("--") else arg[1:]
    if name.startswith("-"):
        name = name[1:]
    return name.split("=", 1)[0]


def reorder(flags: Sequence[Flag], args: Sequence[str]) -> list[str]:
    """urfave/cli v1's ``reorderArgs``: known flags (and their values) before the rest.

    Words after ``--`` stay where they are, behind a ``--``; unknown flags
    stay among the positionals. A value flag written without ``=`` takes the
    next word with it unless that word is a known flag (Go's flag parser
    then takes that flag as the value, as runc does); a boolean flag takes
    nothing with it (urfave/cli takes the next word: see the module docstring).
    """
    by_name = {n: f for f in flags for n in f.names}
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return [*moved, "--", *rest, *args[i + 1 :]]
        name = _flag_name(arg)
        flag = by_name.get(name) if name else None
        if flag is None:
            rest.append(arg)
        else:
            moved.append(arg)
            if flag.kind != BOOL and "=" not in arg and i + 1 < len(args):
                after = _flag_name(args[i + 1])
                if not after or after not in by_name:
                    moved.append(args[i + 1])
                    i += 1
        i += 1
    return moved + rest


def parse_flags(flags: Sequence[Flag], args: Sequence[str], ns: Namespace) -> list[str]:
    """Go's ``FlagSet.Parse``: set the flags in ``args`` on ``ns``; return the positionals."""
    by_name = {n: f for f in flags for n in f.names}
    i = 0
    n = len(args)
    while i < n:
        arg = args[i]
        if len(arg) < 2 or arg[0] != "-":
            break
        if arg == "--":
            i += 1
            break
        name = arg[2:] if arg[1] == "-" else arg[1:]
        if not name or name[0] in "-=":
            raise UsageError(f"bad flag syntax: {arg}")
        i += 1
        name, eq, value = name.partition("=")
        flag = by_name.get(name)
        if flag is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        if flag.kind == BOOL:
            if not eq:
                value = "true"
            if value in _TRUE:
                setattr(ns, flag.dest, True)
            elif value in _FALSE:
                setattr(ns, flag.dest, False)
            else:
                raise UsageError(f'invalid boolean value "{value}" for -{name}: parse error')
            continue
        if not eq:
            if i == n:
                raise UsageError(f"flag needs an argument: -{name}")
            value = args[i]
            i += 1
        if flag.kind == INT:
            number = go_int(value)
            if isinstance(number, str):
                raise UsageError(f'invalid value "{value}" for flag -{name}: {number}')
            setattr(ns, flag.dest, number)
        elif flag.kind == LIST:
            getattr(ns, flag.dest).append(value)
        else:
            setattr(ns, flag.dest, value)
    return list(args[i:])


def go_int(text: str) -> int | str:
    """Go's ``strconv.ParseInt(text, 0, 64)``: the number, or the error ("parse error", ...)."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or digits[0] in "+-_" or digits != digits.strip():
        return "parse error"
    try:
        if len(digits) > 1 and digits[0] == "0" and digits[1] in "01234567_":
            value = int(digits[1:].lstrip("_"), 8)  # Go's legacy octal: 0755
        else:
            value = int(digits, 0)
    except ValueError:
        return "parse error"
    if text[0] == "-":
        value = -value
    if not -(2**63) <= value < 2**63:
        return "value out of range"
    return value


def _check_choices(flags: Sequence[Flag], ns: Namespace, log_to: Namespace | None) -> None:
    for f in flags:
        if f.choices:
            value = getattr(ns, f.dest)
            if value not in f.choices:
                raise UsageError(f.invalid.format(value=value), namespace=log_to)
