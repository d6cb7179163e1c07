"""``docker top``: the host's ``ps`` output, cut down to the processes of one container.

moby's way (``daemon/top_unix.go``), followed here: list the PIDs in the
container's cgroup, run ``ps`` with the client's *ps_args* (default
``-ef``) plus ``-q <pids>`` (procps' quick selection), and keep the rows
whose ``PID`` column is one of them. Some options (``f``) refuse ``-q``;
then ``ps`` runs with the client's arguments alone and the filter does the
work. The answer is Docker's ``ContainerTopResponse``::

    {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
     "Processes": [["root", "4242", "4230", "0", "10:00", "?", "00:00:00", "sleep 60"]]}

The last column keeps its spaces (a command line): a row's extra fields are
joined into it. Thread rows (``ps -m``: ``-`` in the PID column) follow the
process they belong to.

PIDs and user names are the host's, as Docker shows them.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

from bulkhead.errors import BulkheadError

#: ``ps`` arguments of a request that names none.
DEFAULT_PS_ARGS = "-ef"

_PID_RENAME = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


class TopError(BulkheadError):
    """``ps`` failed, or its output has no PID column."""


def validate_ps_args(ps_args: str) -> None:
    """Refuse ``-o x=PID``: a column renamed to ``PID`` would fool the filter (moby's check)."""
    for key, value in _PID_RENAME.findall(ps_args):
        if key != "pid":
            raise ValueError(f'specifying "{key}={value}" is not allowed')


def ps_argv(ps_args: str, pids: list[int] | None) -> list[str]:
    """``ps`` with the client's arguments (split on spaces, as moby does) and ``-q pids``."""
    argv = ["ps", *ps_args.split(" ")]
    if pids is not None:
        argv.append("-q" + ",".join(str(p) for p in pids))
    return argv


def run_ps(ps_args: str, pids: list[int]) -> str:
    """``ps``' output for ``pids`` (blocking: the daemon calls it in a worker thread).

    Runs ``ps ps_args -q pids``, then ``ps ps_args`` if that fails;
    :class:`TopError` ``ps: <its first line of error>`` if both do.
    """
    for argv in (ps_argv(ps_args, pids), ps_argv(ps_args, None)):
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise TopError(f"ps: {exc}") from None
        if proc.returncode == 0:
            return proc.stdout.decode(errors="replace")
    first = proc.stderr.decode(errors="replace").split("\n", 1)[0].strip()
    raise TopError(f"ps: {first or f'exit status {proc.returncode}'}")


def _fields(line: str) -> list[str]:
    # ASCII whitespace only (moby's fieldsASCII): a command may hold other spaces
    return re.split(r"[\t\n\f\r ]+", line.strip("\t\n\f\r "))


def parse_ps_output(output: str, pids: set[int]) -> dict[str, Any]:
    """Docker's ``{"Titles": [...], "Processes": [[...]]}`` from ``ps`` output."""
    lines = output.split("\n")
    titles = _fields(lines[0]) if lines and lines[0].strip() else []
    if "PID" not in titles:
        raise TopError("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    processes: list[list[str]] = []
    previous_kept = False  # for thread rows (PID "-") of the process above
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = _fields(line)
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":
            if previous_kept:
                processes.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError:
            raise TopError(f"Unexpected pid '{fields[pid_index]}'") from None
        previous_kept = pid in pids
        if previous_kept:
            processes.append(_fit(fields, len(titles)))
    return {"Titles": titles, "Processes": processes}


def _fit(fields: list[str], columns: int) -> list[str]:
    """As many cells as titles: the overhanging fields join the last cell."""
    if len(fields) <= columns:
        return fields
    return [*fields[: columns - 1], " ".join(fields[columns - 1 :])]


__all__ = [
    "DEFAULT_PS_ARGS",
    "TopError",
    "parse_ps_output",
    "ps_argv",
    "run_ps",
    "validate_ps_args",
]
