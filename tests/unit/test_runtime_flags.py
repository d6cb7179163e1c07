"""bulkhead.runtime.flags and the table in bulkhead.runtime.cli: runc's command-line grammar.

What runc (1.1, urfave/cli v1 on Go's ``flag``) does with each command line
was checked against the ``runc`` binary: messages, exit codes and streams.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkhead.runtime import cli
from bulkhead.runtime.flags import (
    BOOL,
    INT,
    LIST,
    STRING,
    Flag,
    Namespace,
    UsageError,
    go_int,
    parse_flags,
    reorder,
)

GLOBALS: dict[str, Any] = {
    "debug": False,
    "log": "",
    "log_format": "text",
    "root": "/run/bulkhead-runtime",
    "criu": "criu",
    "systemd_cgroup": False,
    "rootless": "auto",
    "version": False,
    "help": False,
}

CREATE: dict[str, Any] = {
    "bundle": ".",
    "console_socket": None,
    "pid_file": None,
    "no_pivot": False,
    "no_new_keyring": False,
    "preserve_fds": 0,
}

UPDATE_FLAGS = [
    "blkio_weight",
    "cpu_period",
    "cpu_quota",
    "cpu_share",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpuset_cpus",
    "cpuset_mems",
    "kernel_memory",
    "kernel_memory_tcp",
    "memory",
    "memory_reservation",
    "memory_swap",
    "pids_limit",
    "l3_cache_schema",
    "mem_bw_schema",
    "cpu_idle",
    "cpu_burst",
]

EXEC: dict[str, Any] = {
    "console_socket": None,
    "cwd": "",
    "env": [],
    "tty": False,
    "user": "",
    "additional_gids": [],
    "process": "",
    "detach": False,
    "pid_file": None,
    "process_label": "",
    "apparmor": "",
    "no_new_privs": False,
    "cap": [],
    "preserve_fds": 0,
    "cgroup": [],
    "ignore_paused": False,
}

#: Every verb with the fewest arguments it takes, and what it parses to.
DEFAULTS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "create": (["c1"], {**CREATE, "container_id": "c1"}),
    "run": (["c1"], {**CREATE, "detach": False, "keep": False, "container_id": "c1"}),
    "start": (["c1"], {"container_id": "c1"}),
    "state": (["c1"], {"container_id": "c1"}),
    "pause": (["c1"], {"container_id": "c1"}),
    "resume": (["c1"], {"container_id": "c1"}),
    "kill": (["c1"], {"all": False, "container_id": "c1", "signal": "SIGTERM"}),
    "delete": (["c1"], {"force": False, "container_ids": ["c1"]}),
    "exec": (["c1"], {**EXEC, "container_id": "c1", "command": []}),
    "ps": (["c1"], {"format": "table", "container_id": "c1", "ps_args": []}),
    "list": ([], {"format": "table", "quiet": False}),
    "spec": ([], {"bundle": "", "rootless": False}),  # spec's --rootless hides the global one
    "features": ([], {}),
    "update": (
        ["c1"],
        {"resources": "", **dict.fromkeys(UPDATE_FLAGS), "container_id": "c1"},
    ),
    "events": (["c1"], {"interval": "5s", "stats": False, "container_id": "c1"}),
}


def parse(*argv: str) -> Namespace:
    return cli.parse_args(list(argv))


def usage_error(*argv: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        cli.parse_args(list(argv))
    return info.value


# ------------------------------------------------------------------ every verb


def test_every_verb_is_in_the_table() -> None:
    assert set(cli.VERBS) == set(DEFAULTS)
    assert {c.name for c in cli.APP.commands} == {*DEFAULTS, "help"}


@pytest.mark.parametrize("verb", sorted(DEFAULTS))
def test_defaults_and_destinations(verb: str) -> None:
    args, expect = DEFAULTS[verb]
    assert vars(parse(verb, *args)) == {**GLOBALS, "verb": verb, **expect}


def test_global_flags() -> None:
    ns = parse(
        "--root",
        "/r",
        "--log",
        "/l",
        "--log-format",
        "json",
        "--debug",
        "--systemd-cgroup",
        "--rootless",
        "true",
        "--criu",
        "/c",
        "state",
        "c1",
    )
    assert (ns.root, ns.log, ns.log_format, ns.debug, ns.systemd_cgroup) == (
        "/r",
        "/l",
        "json",
        True,
        True,
    )
    assert (ns.rootless, ns.criu, ns.verb, ns.container_id) == ("true", "/c", "state", "c1")


@pytest.mark.parametrize("verb", ["create", "run"])
def test_create_and_run_flags(verb: str) -> None:
    ns = parse(
        verb,
        "-b",
        "/b",
        "--console-socket",
        "/s",
        "--pid-file",
        "/p",
        "--no-pivot",
        "--no-new-keyring",
        "--preserve-fds",
        "3",
        "c1",
    )
    assert (ns.bundle, ns.console_socket, ns.pid_file) == ("/b", "/s", "/p")
    assert (ns.no_pivot, ns.no_new_keyring, ns.preserve_fds) == (True, True, 3)


def test_run_flags() -> None:
    ns = parse("run", "-d", "--keep", "c1")
    assert (ns.detach, ns.keep) == (True, True)
    ns = parse("run", "--detach", "c1")
    assert (ns.detach, ns.keep) == (True, False)


def test_exec_flags() -> None:
    ns = parse(
        "exec",
        "--console-socket",
        "/s",
        "--cwd",
        "/w",
        "-e",
        "A=1",
        "--env",
        "B=2",
        "-t",
        "-u",
        "1:2",
        "-g",
        "5",
        "--additional-gids",
        "6",
        "-p",
        "/p.json",
        "-d",
        "--pid-file",
        "/pid",
        "--process-label",
        "lbl",
        "--apparmor",
        "prof",
        "--no-new-privs",
        "-c",
        "CAP_A",
        "--cap",
        "CAP_B",
        "--preserve-fds",
        "2",
        "--cgroup",
        "cpu:/a",
        "--cgroup",
        "b",
        "--ignore-paused",
        "c1",
        "ls",
        "-l",
    )
    assert vars(ns) == {
        **GLOBALS,
        "verb": "exec",
        "console_socket": "/s",
        "cwd": "/w",
        "env": ["A=1", "B=2"],
        "tty": True,
        "user": "1:2",
        "additional_gids": ["5", "6"],
        "process": "/p.json",
        "detach": True,
        "pid_file": "/pid",
        "process_label": "lbl",
        "apparmor": "prof",
        "no_new_privs": True,
        "cap": ["CAP_A", "CAP_B"],
        "preserve_fds": 2,
        "cgroup": ["cpu:/a", "b"],
        "ignore_paused": True,
        "container_id": "c1",
        "command": ["ls", "-l"],
    }


def test_kill_delete_ps_list_spec_events_flags() -> None:
    ns = parse("kill", "-a", "c1", "KILL")
    assert (ns.all, ns.container_id, ns.signal) == (True, "c1", "KILL")
    ns = parse("delete", "-f", "c1", "c2")
    assert (ns.force, ns.container_ids) == (True, ["c1", "c2"])
    ns = parse("ps", "-f", "json", "c1", "-ef")
    assert (ns.format, ns.container_id, ns.ps_args) == ("json", "c1", ["-ef"])
    ns = parse("list", "-q", "--format", "json")
    assert (ns.quiet, ns.format) == (True, "json")
    ns = parse("spec", "-b", "/x", "--rootless")
    assert (ns.bundle, ns.rootless) == ("/x", True)
    ns = parse("events", "--interval", "250ms", "--stats", "c1")
    assert (ns.interval, ns.stats) == ("250ms", True)


def test_update_flags() -> None:
    argv = ["update", "-r", "/r.json"]
    for i, dest in enumerate(UPDATE_FLAGS):
        argv += ["--" + dest.replace("_", "-"), str(i)]
    ns = parse(*argv, "c1")
    assert ns.resources == "/r.json"
    assert [getattr(ns, d) for d in UPDATE_FLAGS] == [str(i) for i in range(len(UPDATE_FLAGS))]
    assert parse("update", "--resources=-", "c1").resources == "-"


# ------------------------------------------------------------- Go's flag forms


@pytest.mark.parametrize(
    "form",
    [
        ["-bundle", "/b"],
        ["--bundle", "/b"],
        ["-bundle=/b"],
        ["--bundle=/b"],
        ["-b", "/b"],
        ["--b", "/b"],
        ["-b=/b"],
    ],
)
def test_value_flag_forms(form: list[str]) -> None:
    assert parse("create", *form, "c1").bundle == "/b"


def test_value_flag_takes_the_next_word_whatever_it_is() -> None:
    assert parse("create", "--pid-file", "--no-pivot", "c1").pid_file == "--no-pivot"
    assert parse("create", "--pid-file", "-", "c1").pid_file == "-"
    assert parse("create", "--bundle=", "c1").bundle == ""
    assert parse("create", "--bundle=a=b", "c1").bundle == "a=b"
    assert parse("--root", "--debug", "state", "c1").root == "--debug"


@pytest.mark.parametrize(
    ("form", "value"),
    [
        (["--detach"], True),
        (["-detach"], True),
        (["-d"], True),
        (["--detach=true"], True),
        (["--detach=false"], False),
        (["-d=1"], True),
        (["-d=0"], False),
        (["--detach=T"], True),
        (["--detach=F"], False),
        (["--detach=TRUE"], True),
        (["--detach=False"], False),
        (["-d", "--detach=false"], False),  # the last one wins
        ([], False),
    ],
)
def test_boolean_flag_forms(form: list[str], value: bool) -> None:
    assert parse("run", *form, "c1").detach is value


def test_boolean_flag_does_not_take_the_next_word() -> None:
    ns = parse("kill", "--all", "c1", "KILL")
    assert (ns.all, ns.container_id, ns.signal) == (True, "c1", "KILL")


def test_global_single_dash_and_equals() -> None:
    ns = parse("-root=/r", "-log-format", "json", "--systemd-cgroup=false", "state", "c1")
    assert (ns.root, ns.log_format, ns.systemd_cgroup) == ("/r", "json", False)
    assert parse("--log-format=", "state", "c1").log_format == ""  # runc: text


def test_repeated_flags_append_and_last_value_wins() -> None:
    ns = parse("exec", "-e", "A=1", "-e", "A=2", "--env=B", "-env", "C", "c1", "true")
    assert ns.env == ["A=1", "A=2", "B", "C"]
    assert parse("exec", "-g", "1", "-g=2", "c1", "true").additional_gids == ["1", "2"]
    assert parse("exec", "-c", "X", "--cap", "Y", "c1", "true").cap == ["X", "Y"]
    assert parse("exec", "--cgroup", "a", "--cgroup", "b", "c1", "true").cgroup == ["a", "b"]
    assert parse("create", "-b", "/1", "--bundle", "/2", "c1").bundle == "/2"


def test_lists_are_not_shared_between_parses() -> None:
    parse("exec", "-e", "A=1", "c1", "true")
    assert parse("exec", "c1", "true").env == []


# -------------------------------------------------- positionals, --, reorder


def test_exec_stops_at_the_first_positional() -> None:
    ns = parse("exec", "-t", "c1", "sh", "-c", "echo -e x", "--env", "Y")
    assert (ns.tty, ns.container_id) == (True, "c1")
    assert ns.command == ["sh", "-c", "echo -e x", "--env", "Y"]
    assert ns.cap == [] and ns.env == []
    # Unknown flags after the id are the command's, not an error.
    assert parse("exec", "c1", "-x").command == ["-x"]
    assert parse("exec", "c1", "--", "ls").command == ["--", "ls"]


def test_ps_stops_at_the_first_positional() -> None:
    ns = parse("ps", "c1", "-f", "json")
    assert (ns.format, ns.ps_args) == ("table", ["-f", "json"])
    assert parse("ps", "c1", "-ef").ps_args == ["-ef"]


def test_double_dash_ends_the_flags() -> None:
    ns = parse("exec", "-t", "--", "c1", "-e", "X")
    assert (ns.tty, ns.container_id, ns.command, ns.env) == (True, "c1", ["-e", "X"], [])
    ns = parse("--", "state", "c1")
    assert (ns.verb, ns.container_id) == ("state", "c1")
    ns = parse("kill", "--", "c1", "-9")
    assert (ns.container_id, ns.signal, ns.all) == ("c1", "-9", False)
    ns = parse("kill", "c1", "--", "--all")
    assert (ns.container_id, ns.signal, ns.all) == ("c1", "--all", False)


def test_a_lone_dash_is_positional() -> None:
    assert parse("kill", "c1", "-").signal == "-"
    assert parse("exec", "-", "ls").container_id == "-"
    assert parse("create", "").container_id == ""  # empty id: the runtime rejects it


def test_global_flags_stop_at_the_verb() -> None:
    assert usage_error("state", "--root", "/r", "c1").message == (
        "flag provided but not defined: -root"
    )


def test_known_flags_move_before_positionals_except_for_exec_and_ps() -> None:
    ns = parse("delete", "c1", "--force")
    assert (ns.force, ns.container_ids) == (True, ["c1"])
    ns = parse("kill", "c1", "KILL", "--all")
    assert (ns.all, ns.container_id, ns.signal) == (True, "c1", "KILL")
    ns = parse("kill", "c1", "--all", "KILL")
    assert (ns.all, ns.container_id, ns.signal) == (True, "c1", "KILL")
    ns = parse("create", "c1", "--bundle", "/b", "--pid-file=/p")
    assert (ns.bundle, ns.pid_file, ns.container_id) == ("/b", "/p", "c1")
    ns = parse("update", "c1", "--memory", "1m")
    assert (ns.memory, ns.container_id) == ("1m", "c1")
    ns = parse("events", "c1", "--stats")
    assert ns.stats is True


def test_reorder_as_urfave_cli() -> None:
    flags = (Flag("bundle, b"), Flag("force, f", BOOL))
    assert reorder(flags, ["a", "-b", "x", "c"]) == ["-b", "x", "a", "c"]
    assert reorder(flags, ["a", "-b=x", "c"]) == ["-b=x", "a", "c"]
    assert reorder(flags, ["a", "--force", "c"]) == ["--force", "a", "c"]
    assert reorder(flags, ["a", "-x", "c"]) == ["a", "-x", "c"]
    assert reorder(flags, ["a", "--", "-b", "x"]) == ["--", "a", "-b", "x"]
    assert reorder(flags, ["a", "-b", "--force"]) == ["-b", "--force", "a"]
    assert reorder(flags, ["a", "-b", "--"]) == ["-b", "--", "a"]


def test_a_moved_value_flag_without_its_value() -> None:
    # runc: ``create c1 --bundle`` takes c1 as the bundle, then lacks the id.
    err = usage_error("create", "c1", "--bundle")
    assert err.message == 'bulkhead-runtime: "create" requires exactly 1 argument(s)'


def test_parse_flags_returns_the_positionals() -> None:
    ns = Namespace(b=None, n=0, items=[], f=False)
    flags = (Flag("b"), Flag("n", INT, 0), Flag("items", LIST), Flag("f", BOOL))
    rest = parse_flags(flags, ["-b", "x", "-n=4", "-items", "1", "-f", "p", "-items", "2"], ns)
    assert rest == ["p", "-items", "2"]
    assert (ns.b, ns.n, ns.items, ns.f) == ("x", 4, ["1"], True)
    assert parse_flags(flags, [], ns) == []
    assert parse_flags(flags, ["--"], ns) == []
    assert parse_flags(flags, ["-", "-f"], ns) == ["-", "-f"]


# ---------------------------------------------------------------- typed flags


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("3", 3),
        ("+3", 3),
        ("-1", -1),
        ("0x10", 16),
        ("0X1f", 31),
        ("010", 8),
        ("0o17", 15),
        ("0b101", 5),
        ("1_000", 1000),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("abc", "parse error"),
        ("", "parse error"),
        ("-", "parse error"),
        (" 1", "parse error"),
        ("1 ", "parse error"),
        ("1.5", "parse error"),
        ("08", "parse error"),
        ("--1", "parse error"),
        ("+-1", "parse error"),
        ("_1", "parse error"),
        ("٣", "parse error"),
        ("9223372036854775808", "value out of range"),
        ("99999999999999999999", "value out of range"),
    ],
)
def test_go_int(text: str, value: int | str) -> None:
    assert go_int(text) == value


def test_int_flag() -> None:
    assert parse("exec", "--preserve-fds", "0x10", "c1", "true").preserve_fds == 16
    assert parse("create", "--preserve-fds=-1", "c1").preserve_fds == -1
    assert isinstance(parse("run", "--preserve-fds", "2", "c1").preserve_fds, int)


def test_flag_dest_and_defaults() -> None:
    assert Flag("pid-file").dest == "pid_file"
    assert Flag("x", BOOL).default is False
    assert Flag("x", LIST).initial() == []
    assert Flag("x", STRING, "d").initial() == "d"
    f = Flag("x", LIST, ("a",))
    first = f.initial()
    first.append("b")
    assert f.initial() == ["a"]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("argv", "message", "usage", "code"),
    [
        (["--bogus"], "flag provided but not defined: -bogus", "Incorrect Usage. ", 1),
        (["-x", "state", "c1"], "flag provided but not defined: -x", "Incorrect Usage. ", 1),
        (["--root"], "flag needs an argument: -root", "Incorrect Usage. ", 1),
        (["---root", "/r"], "bad flag syntax: ---root", "Incorrect Usage. ", 1),
        (["-=x"], "bad flag syntax: -=x", "Incorrect Usage. ", 1),
        (
            ["--debug=maybe", "state", "c1"],
            'invalid boolean value "maybe" for -debug: parse error',
            "Incorrect Usage. ",
            1,
        ),
        (["create", "-x", "c1"], "flag provided but not defined: -x", "Incorrect Usage: ", 1),
        (["exec", "-td", "c1", "ls"], "flag provided but not defined: -td", "Incorrect Usage: ", 1),
        (["delete", "-ff", "c1"], "flag provided but not defined: -ff", "Incorrect Usage: ", 1),
        (["create", "-b"], "flag needs an argument: -b", "Incorrect Usage: ", 1),
        (
            ["run", "-d=yes", "c1"],
            'invalid boolean value "yes" for -d: parse error',
            "Incorrect Usage: ",
            1,
        ),
        (
            ["exec", "--preserve-fds", "abc", "c1", "ls"],
            'invalid value "abc" for flag -preserve-fds: parse error',
            "Incorrect Usage: ",
            1,
        ),
        (
            ["create", "--preserve-fds=99999999999999999999", "c1"],
            'invalid value "99999999999999999999" for flag -preserve-fds: value out of range',
            "Incorrect Usage: ",
            1,
        ),
        (["foo"], "No help topic for 'foo'", "", 3),
        (["help", "foo"], "No help topic for 'foo'", "", 3),
        (["--log-format", "xml", "state", "c1"], "invalid log-format: xml", "", 1),
        (["list", "-f", "yaml"], "invalid format option", "", 1),
        (["ps", "--format=xml", "c1"], "invalid format option", "", 1),
    ],
)
def test_bad_input(argv: list[str], message: str, usage: str, code: int) -> None:
    err = usage_error(*argv)
    assert (err.message, err.code) == (message, code)
    assert err.usage.startswith(usage)
    if usage:
        assert usage + message + "\n\nNAME:\n" in err.usage
    if usage == "Incorrect Usage. ":  # global flags: the program's help
        assert "GLOBAL OPTIONS:" in err.usage and err.namespace is None
    elif usage:  # the verb's flags: its help, logged where --log says
        assert f"bulkhead-runtime {argv[0]} - " in err.usage and err.namespace is not None


def test_log_format_error_is_not_logged_to_the_log_file() -> None:
    # runc checks the format before it opens --log.
    assert usage_error("--log", "/l", "--log-format", "xml", "state", "c1").namespace is None
    err = usage_error("--log", "/l", "state")
    assert err.namespace is not None and err.namespace.log == "/l"


def test_global_errors_come_before_the_verb() -> None:
    assert usage_error("--log-format", "xml", "foo").message == "invalid log-format: xml"
    assert usage_error("--bogus", "foo").message == "flag provided but not defined: -bogus"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create"], '"create" requires exactly 1 argument(s)'),
        (["create", "a", "b"], '"create" requires exactly 1 argument(s)'),
        (["run"], '"run" requires exactly 1 argument(s)'),
        (["start"], '"start" requires exactly 1 argument(s)'),
        (["state"], '"state" requires exactly 1 argument(s)'),
        (["state", "a", "-"], '"state" requires exactly 1 argument(s)'),
        (["pause", "a", "b"], '"pause" requires exactly 1 argument(s)'),
        (["resume"], '"resume" requires exactly 1 argument(s)'),
        (["update"], '"update" requires exactly 1 argument(s)'),
        (["update", "a", "--memory"], '"update" requires exactly 1 argument(s)'),
        (["events"], '"events" requires exactly 1 argument(s)'),
        (["kill"], '"kill" requires a minimum of 1 argument(s)'),
        (["kill", "a", "b", "c"], '"kill" requires a maximum of 2 argument(s)'),
        (["delete"], '"delete" requires a minimum of 1 argument(s)'),
        (["exec"], '"exec" requires a minimum of 1 argument(s)'),
        (["ps"], '"ps" requires a minimum of 1 argument(s)'),
        (["list", "x"], '"list" requires exactly 0 argument(s)'),
        (["spec", "x"], '"spec" requires exactly 0 argument(s)'),
        (["features", "x"], '"features" requires exactly 0 argument(s)'),
    ],
)
def test_wrong_number_of_arguments(argv: list[str], message: str) -> None:
    err = usage_error(*argv)
    assert err.message == "bulkhead-runtime: " + message
    assert err.code == 1
    assert err.usage.startswith(f"Incorrect Usage.\n\nNAME:\n   bulkhead-runtime {argv[0]} - ")


def test_unknown_flag_after_a_moved_positional_is_an_argument() -> None:
    # runc: ``delete c1 -x`` -> "requires exactly 1 argument(s)"; here delete takes
    # several ids, so -x is a second id.
    assert parse("delete", "c1", "-x").container_ids == ["c1", "-x"]
    err = usage_error("state", "c1", "-x")
    assert err.message == 'bulkhead-runtime: "state" requires exactly 1 argument(s)'


# ----------------------------------------------------------------------- help


def test_help_and_version_requests() -> None:
    for argv in (["--help"], ["-h"], ["--help", "state", "c1"], ["-h=true"]):
        ns = parse(*argv)
        assert (ns.help, ns.verb) == (True, None), argv
    for argv in (["--version"], ["-v"], ["-v", "state"]):
        ns = parse(*argv)
        assert (ns.version, ns.verb) == (True, None), argv
    assert parse("-v=false", "state", "c1").version is False
    ns = parse("state", "-h")  # no argument-count error for help
    assert (ns.help, ns.verb) == (True, "state")
    ns = parse("delete", "c1", "--help")  # moved like any known flag
    assert (ns.help, ns.verb) == (True, "delete")
    assert parse("exec", "c1", "-h").command == ["-h"]  # not exec's
    ns = parse("help", "run")
    assert (ns.verb, ns.topic) == ("help", "run")
    ns = parse("h", "kill")
    assert (ns.verb, ns.topic) == ("help", "kill")
    ns = parse()
    assert (ns.verb, ns.topic) == ("help", None)


def test_program_help_lists_verbs_and_global_flags() -> None:
    text = cli.APP.help_text()
    assert text.startswith("NAME:\n   bulkhead-runtime - ")
    assert "\nUSAGE:\n   bulkhead-runtime [global options] command [command options]" in text
    for cmd in cli.APP.commands:
        assert f"\n   {cmd.name}" in text and cmd.help in text
    assert "   help, h " in text
    for flag in cli.APP.flags:
        if flag.hidden:
            assert f"--{flag.names[0]} " not in text
        else:
            assert any(line.startswith(f"   {flag.render()}  ") for line in text.splitlines())
    assert "   --root value        root directory for storage of container state" in text
    assert "   --version, -v       print the version" in text
    assert '(default: "/run/bulkhead-runtime")' in text


@pytest.mark.parametrize("verb", sorted(DEFAULTS))
def test_verb_help_has_a_line_per_flag(verb: str) -> None:
    cmd = cli.APP.command(verb)
    assert cmd is not None
    text = cli.APP.help_text(verb)
    assert text.startswith(f"NAME:\n   bulkhead-runtime {verb} - {cmd.help}\n\nUSAGE:\n")
    lines = text.splitlines()
    visible = [f for f in cmd.flags if not f.hidden]
    for flag in visible:
        assert flag.help
        (line,) = [x for x in lines if x.startswith(f"   {flag.render()}  ")]
        assert line.rstrip().endswith(flag.render_help())
    for flag in cmd.flags:
        if flag.hidden:
            assert f"--{flag.names[0]} " not in text
    assert ("\nOPTIONS:\n" in text) == bool(visible)


def test_verb_help_lines() -> None:
    text = cli.APP.help_text("kill")
    assert "USAGE:\n   bulkhead-runtime kill [command options] <container-id> [signal]\n" in text
    assert "OPTIONS:\n   --all, -a  send the specified signal to all processes" in text
    assert "bulkhead-runtime state <container-id>\n" in cli.APP.help_text("state")
    exec_help = cli.APP.help_text("exec")
    assert "   --env value, -e value              set environment variables\n" in exec_help
    assert "(stdio + $LISTEN_FDS + N in total) (default: 0)\n" in exec_help
    assert "--cgroup" not in exec_help and "--ignore-paused" not in exec_help


# ------------------------------------------------------- the program: streams


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """``run(*argv)`` -> (exit code, stdout, stderr) of ``cli.run_cli`` in this process."""
    monkeypatch.setattr(cli, "LOG", cli.Logger())
    # run_cli hides typing_extensions from msgspec; keep that to this test.
    monkeypatch.setitem(sys.modules, "typing_extensions", sys.modules.get("typing_extensions"))

    def call(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            cli.run_cli(list(argv))
        out, err = capsys.readouterr()
        code = info.value.code
        assert isinstance(code, int)
        return code, out, err

    yield call


def test_version_on_stdout(run: Any) -> None:
    for flag in ("--version", "-v"):
        code, out, err = run(flag)
        assert (code, err) == (0, "")
        assert out == cli.version_text()
        assert out.startswith("bulkhead-runtime version ")


def test_help_on_stdout(run: Any, tmp_path: Path) -> None:
    for argv in (["--help"], ["-h"], [], ["help"], ["h"], ["--root", str(tmp_path)]):
        assert run(*argv) == (0, cli.APP.help_text(), ""), argv
    for argv in (["run", "--help"], ["run", "-h"], ["help", "run"], ["h", "run"]):
        assert run(*argv) == (0, cli.APP.help_text("run"), ""), argv
    assert run("state", "-h", "a", "b") == (0, cli.APP.help_text("state"), "")
    assert run("help", "-h") == (0, cli.APP.help_text("help"), "")


def test_usage_error_streams(run: Any, tmp_path: Path) -> None:
    root = str(tmp_path)
    code, out, err = run("--root", root, "state")
    assert code == 1
    assert out == "Incorrect Usage.\n\n" + cli.APP.help_text("state")
    assert err.startswith('time="') and err.count("\n") == 1
    assert err.endswith(
        ' level=error msg="bulkhead-runtime: \\"state\\" requires exactly 1 argument(s)"\n'
    )

    code, out, err = run("--bogus")
    assert code == 1
    assert out.startswith("Incorrect Usage. flag provided but not defined: -bogus\n\nNAME:")
    assert err.endswith('level=error msg="flag provided but not defined: -bogus"\n')

    code, out, err = run("--root", root, "create", "-x", "c1")
    assert code == 1
    assert out == "Incorrect Usage: flag provided but not defined: -x\n\n" + cli.APP.help_text(
        "create"
    )
    assert err.endswith('msg="flag provided but not defined: -x"\n')

    code, out, err = run("--root", root, "foo")
    assert (code, out) == (3, "")
    assert err.endswith("level=error msg=\"No help topic for 'foo'\"\n")

    code, out, err = run("--root", root, "list", "--format", "yaml")
    assert (code, out) == (1, "")
    assert err.endswith('msg="invalid format option"\n')

    code, out, err = run("--log-format", "xml", "state", "c1")
    assert (code, out) == (1, "")
    assert err.endswith('level=error msg="invalid log-format: xml"\n')


def test_usage_error_goes_to_the_log_file(run: Any, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    code, out, err = run("--log", str(log), "--log-format", "json", "kill", "a", "b", "c")
    assert code == 1
    assert out.startswith("Incorrect Usage.\n\n")
    message = 'bulkhead-runtime: "kill" requires a maximum of 2 argument(s)'
    assert err == message + "\n"  # as runc: also on stderr when the log goes elsewhere
    import json

    entry = json.loads(log.read_text())
    assert (entry["level"], entry["msg"]) == ("error", message)
    assert list(entry) == ["level", "msg", "time"]


def test_log_quoting(tmp_path: Path) -> None:
    import json

    logger = cli.Logger()
    logger.path = str(tmp_path / "log")
    for fmt in ("text", "json"):
        logger.format = fmt
        logger.write("error", 'a "b" \\ c\nd\te\x1b é \udcff')
    text, js = (tmp_path / "log").read_text().splitlines()
    assert text.endswith(' level=error msg="a \\"b\\" \\\\ c\\nd\\te\\u001b é \\udcff"')
    assert json.loads(js)["msg"] == 'a "b" \\ c\nd\te\x1b é \udcff'


def test_verb_errors_keep_their_messages(run: Any, tmp_path: Path) -> None:
    code, out, err = run("--root", str(tmp_path), "state", "nope")
    assert (code, out) == (1, "")
    assert "does not exist" in err


# ------------------------------------------------------------- the start path


BANNED = ("argparse", "re", "shutil", "textwrap", "gettext", "locale", "json", "typing")


def test_no_heavy_imports_on_the_parse_path(tmp_path: Path) -> None:
    """Parsing, usage errors and --version import none of argparse, re, json, typing, ..."""
    code = f"""
import sys
from bulkhead.runtime import cli
for argv in (["--version"], ["--root", {str(tmp_path)!r}, "state"], ["--bogus"],
             ["create", "-x", "a"], ["nope"], ["--log-format", "xml", "list"],
             ["exec", "--preserve-fds", "x", "c", "ls"]):
    try:
        cli.run_cli(argv)
    except SystemExit:
        pass
cli.parse_args(["exec", "-t", "-e", "A=1", "c1", "sh", "-c", "x"])
sys.stdout.write("\\nLOADED " + " ".join(sorted(set({BANNED!r}) & set(sys.modules))) + "\\n")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == "LOADED "


def test_main_exit_status_and_streams(tmp_path: Path) -> None:
    """Through ``main`` (which ends in ``os._exit``): runc's exit codes."""

    def main(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from bulkhead.runtime.cli import main; main()", *argv],
            capture_output=True,
            text=True,
        )

    proc = main("--version")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("bulkhead-runtime version ")
    proc = main("--root", str(tmp_path), "kill")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Incorrect Usage.\n\nNAME:\n   bulkhead-runtime kill - ")
    assert 'requires a minimum of 1 argument(s)"' in proc.stderr
    proc = main("--root", str(tmp_path), "bogus")
    assert (proc.returncode, proc.stdout) == (3, "")
    proc = main("--root", str(tmp_path), "run", "--help")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "--keep" in proc.stdout
