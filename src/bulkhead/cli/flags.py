"""Docker's command-line grammar (Go's pflag, as cobra uses it), without argparse.

Vocabulary:

*long flag*
    ``--name value``, ``--name=value``; a boolean takes no value
    (``--rm``) but accepts ``--rm=false``.
*shorthand*
    one letter after one dash. Booleans group (``-it``); the first
    shorthand that takes a value takes the rest of the word (``-eA=B``,
    ``-e=A=B`` — pflag drops the ``=``) or else the next word (``-itu 0``).
*interspersed*
    whether flags may follow positional arguments. ``run``, ``create`` and
    ``exec`` stop at the first positional (the image, the container): what
    follows is the container's command, flags included. ``--`` ends flags
    everywhere.
*repeated flags*
    a list flag (``-e``, ``-v``, ``--label``) collects every occurrence; a
    scalar flag keeps the last.

Errors are :class:`UsageError` with cobra's messages (``unknown flag:
--x``, ``flag needs an argument: 'e' in -e``); the CLI exits 125 on them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing and dataclasses cost milliseconds at every start
if TYPE_CHECKING:
    from typing import Any

BOOL = "bool"
STR = "str"
LIST = "list"
INT = "int"

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


class UsageError(Exception):
    """A command line the command cannot accept (exit status 125)."""


class FlagError(UsageError):
    """A flag the grammar refuses (unknown, missing or unparsable value): docker prints
    these with the command's usage line."""


#: usage line of every command by name, for the error messages of :class:`FlagError`
USAGES: dict[str, str] = {}


class Flag:
    """One flag: ``long`` name (without dashes), optional one-letter ``short``."""

    __slots__ = ("default", "help", "kind", "long", "metavar", "short")

    def __init__(
        self,
        long: str,
        short: str = "",
        kind: str = BOOL,
        help: str = "",
        default: Any = None,
        metavar: str = "",
    ) -> None:
        self.long = long
        self.short = short
        self.kind = kind
        self.help = help
        self.default = default
        self.metavar = metavar

    def initial(self) -> Any:
        if self.default is not None:
            return self.default
        return {BOOL: False, STR: "", LIST: [], INT: 0}[self.kind]

    def label(self) -> str:
        return f"-{self.short}, --{self.long}" if self.short else f"--{self.long}"


class Parsed:
    """The outcome: ``values`` by long name (dashes kept), ``args`` the positionals."""

    __slots__ = ("args", "given", "values")

    def __init__(
        self, values: dict[str, Any], args: list[str], given: set[str] | None = None
    ) -> None:
        self.values = values
        self.args = args
        self.given = given if given is not None else set()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def was_set(self, name: str) -> bool:
        return name in self.given


class Command:
    """A command's flags and usage line; ``parse`` turns argv into :class:`Parsed`."""

    def __init__(
        self,
        name: str,
        usage: str,
        flags: list[Flag],
        interspersed: bool = True,
        summary: str = "",
    ) -> None:
        self.name = name
        self.usage = usage
        self.flags = flags
        self.interspersed = interspersed
        self.summary = summary
        USAGES.setdefault(name, usage)
        self._long: dict[str, Flag] = {}
        self._short: dict[str, Flag] = {}
        for f in self.flags:
            self._long[f.long] = f
            if f.short:
                self._short[f.short] = f

    def help_text(self) -> str:
        lines = [f"Usage:  bulkhead {self.usage}", ""]
        if self.summary:
            lines += [self.summary, ""]
        if self.flags:
            lines.append("Options:")
            for f in sorted(self.flags, key=lambda f: f.long):
                head = f"  -{f.short}, --{f.long}" if f.short else f"      --{f.long}"
                if f.kind != BOOL:
                    head += " " + (f.metavar or {STR: "string", LIST: "list", INT: "int"}[f.kind])
                lines.append(f"{head:<32} {f.help}".rstrip())
        return "\n".join(lines) + "\n"

    def parse(self, argv: list[str]) -> Parsed:
        """Parse ``argv`` (the words after the command name).

        ``--help`` (and ``-h`` when no flag claims it) raises :class:`HelpRequested`.
        """
        values = {f.long: _copy(f.initial()) for f in self.flags}
        given: set[str] = set()
        args: list[str] = []
        i = 0
        n = len(argv)
        while i < n:
            word = argv[i]
            i += 1
            if word == "--":
                args.extend(argv[i:])
                break
            if word.startswith("--"):
                name, eq, inline = word[2:].partition("=")
                if name == "help":
                    raise HelpRequested(self.help_text())
                flag = self._long.get(name)
                if flag is None:
                    raise FlagError(f"unknown flag: --{name}")
                if flag.kind == BOOL:
                    _set(values, flag, inline if eq else "true")
                elif eq:
                    _set(values, flag, inline)
                else:
                    if i >= n:
                        raise FlagError(f"flag needs an argument: --{name}")
                    _set(values, flag, argv[i])
                    i += 1
                given.add(flag.long)
                continue
            if word.startswith("-") and len(word) > 1:
                j = 1
                while j < len(word):
                    letter = word[j]
                    j += 1
                    flag = self._short.get(letter)
                    if flag is None:
                        if letter == "h":
                            raise HelpRequested(self.help_text())
                        raise FlagError(f"unknown shorthand flag: {letter!r} in {word}")
                    given.add(flag.long)
                    rest = word[j:]
                    if flag.kind == BOOL:
                        if rest.startswith("="):
                            _set(values, flag, rest[1:])
                            break
                        _set(values, flag, "true")
                        continue
                    if rest:
                        _set(values, flag, rest[1:] if rest.startswith("=") else rest)
                    else:
                        if i >= n:
                            raise FlagError(f"flag needs an argument: {letter!r} in -{letter}")
                        _set(values, flag, argv[i])
                        i += 1
                    break
                continue
            args.append(word)
            if not self.interspersed:
                args.extend(argv[i:])
                break
        return Parsed(values, args, given)


class HelpRequested(Exception):
    """``--help``: the text to print (exit status 0)."""


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _set(values: dict[str, Any], flag: Flag, raw: str) -> None:
    if flag.kind == BOOL:
        if raw in _TRUE:
            values[flag.long] = True
        elif raw in _FALSE:
            values[flag.long] = False
        else:
            raise FlagError(
                f'invalid argument "{raw}" for "{flag.label()}" flag: '
                f'strconv.ParseBool: parsing "{raw}": invalid syntax'
            )
    elif flag.kind == LIST:
        values[flag.long].append(raw)
    elif flag.kind == INT:
        try:
            values[flag.long] = int(raw, 0)
        except ValueError:
            raise FlagError(
                f'invalid argument "{raw}" for "{flag.label()}" flag: '
                f'strconv.ParseInt: parsing "{raw}": invalid syntax'
            ) from None
    else:
        values[flag.long] = raw


def need_args(cmd: Command, parsed: Parsed, minimum: int, maximum: int | None = None) -> None:
    """Cobra's argument-count checks, with docker's wording (exit status 1)."""
    count = len(parsed.args)
    if count < minimum or (maximum is not None and count > maximum):
        if maximum == minimum:
            want = f"exactly {minimum} argument" + ("s" if minimum != 1 else "")
        elif maximum is None:
            want = f"at least {minimum} argument" + ("s" if minimum != 1 else "")
        elif minimum == 0:
            want = f"at most {maximum} argument" + ("s" if maximum != 1 else "")
        else:
            want = f"between {minimum} and {maximum} arguments"
        raise ArgCountError(
            f"'bulkhead {cmd.name}' requires {want}\n\nUsage:  bulkhead {cmd.usage}\n\n"
            f"See 'bulkhead {cmd.name} --help' for more information"
        )


class ArgCountError(UsageError):
    """Too few or too many positional arguments (cobra exits 1 on these, not 125)."""
