"""The Go-template subset behind ``--format`` and docker's table layout."""

from __future__ import annotations

import pytest

from bulkhead.cli.fmt import expand_format, tabwrite
from bulkhead.cli.template import Template, TemplateError, render_list

INSPECT = {
    "Id": "abc",
    "Name": "/web",
    "State": {"Status": "running", "Running": True, "ExitCode": 0, "Pid": 42},
    "Config": {"Labels": {"k": "v", "a.b": "c"}, "Cmd": ["sh", "-c", "echo a >&2"], "Env": None},
    "Mounts": [{"Destination": "/a"}, {"Destination": "/b"}],
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{.State.Status}}", "running"),
        ("{{.Name}}", "/web"),
        ("{{.State.Pid}}", "42"),
        ("{{.State.Running}}", "true"),
        ('{{index .Config.Labels "a.b"}}', "c"),
        ("{{json .Config.Cmd}}", '["sh","-c","echo a >&2"]'),
        ("{{json .Config.Env}}", "null"),
        ("{{.Config.Env}}", "<nil>"),
        ("{{.Missing}}", "<no value>"),
        ("{{.Config.Labels}}", "map[a.b:c k:v]"),
        ("{{.Config.Cmd}}", "[sh -c echo a >&2]"),
        ("{{range .Mounts}}{{.Destination}} {{end}}", "/a /b "),
        ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
        ('{{if eq .State.Status "exited"}}x{{else if .State.Running}}r{{end}}', "r"),
        ("{{with .State}}{{.Status}}{{end}}", "running"),
        ("{{.Name | upper}}", "/WEB"),
        ('{{join .Config.Cmd ","}}', "sh,-c,echo a >&2"),
        ("{{len .Mounts}}", "2"),
        ('{{printf "%s-%d" .Name .State.Pid}}', "/web-42"),
        ("{{- .Id -}} ", "abc"),
        ("a {{- .Id}}", "aabc"),
        ("{{(index .Mounts 1).Destination}}", "/b"),
        ("{{/* comment */}}x", "x"),
    ],
)
def test_templates(source: str, expected: str) -> None:
    assert Template(source).execute(INSPECT) == expected


def test_callable_field_is_a_method_with_arguments() -> None:
    ctx = {"Label": lambda key: {"a": "1"}.get(key, "")}
    assert Template('{{.Label "a"}}').execute(ctx) == "1"


@pytest.mark.parametrize("source", ["{{.A", "{{if .A}}x", "{{end}}", "{{nosuch .A}}", "{{.A | }}"])
def test_bad_templates(source: str) -> None:
    with pytest.raises(TemplateError):
        Template(source).execute({"A": 1})


def test_expand_format() -> None:
    assert expand_format("json") == ("{{json .}}", False)
    assert expand_format("table {{.ID}}\\t{{.Names}}") == ("{{.ID}}\t{{.Names}}", True)


def test_table_alignment_as_docker_tabwriter() -> None:
    out = render_list(
        "table {{.ID}}\t{{.Names}}",
        [{"ID": "0123456789ab", "Names": "web"}, {"ID": "x", "Names": "db"}],
        {"ID": "CONTAINER ID", "Names": "NAMES"},
    )
    assert out == ("CONTAINER ID   NAMES\n0123456789ab   web\nx              db\n")


def test_tabwrite_minimum_width() -> None:
    assert tabwrite(["A\tB", "aa\tbb"]) == "A         B\naa        bb"


def test_non_table_format_has_no_header() -> None:
    assert render_list("{{.Names}}", [{"Names": "a"}, {"Names": "b"}], {"Names": "N"}) == "a\nb\n"
