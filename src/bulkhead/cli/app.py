"""What every command gets: the client, the output streams, and error handling.

A command is ``cmd_x(app: App, args: list[str]) -> int``. It raises
:class:`~bulkhead.cli.flags.UsageError` for a bad command line (125),
:class:`~bulkhead.cli.client.APIError` for a daemon error (printed as
``Error response from daemon: ...``, status 1) or :class:`Exit` with its own
status and message; :func:`run_command` turns them into docker's output.
"""

from __future__ import annotations

import sys

from bulkhead.cli.client import APIError, Client, DaemonUnavailable, socket_from_env
from bulkhead.cli.flags import (
    USAGES,
    ArgCountError,
    Command,
    FlagError,
    HelpRequested,
    Parsed,
    UsageError,
)

TYPE_CHECKING = False  # not `from typing import`: typing costs milliseconds at start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO


class Exit(Exception):
    """Leave with ``code``, printing ``message`` (if any) on stderr."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class App:
    """The command's context: the daemon client (made on first use) and stdio."""

    def __init__(self, host: str | None = None, debug: bool = False, command: str = "") -> None:
        self.host = host
        self.debug = debug
        self.command = command
        self.out: IO[str] = sys.stdout
        self.err: IO[str] = sys.stderr
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            import os

            path, is_default = socket_from_env(self.host)
            autostart = is_default or os.environ.get("BULKHEAD_AUTOSTART") == "1"
            if os.environ.get("BULKHEAD_AUTOSTART") == "0":
                autostart = False
            self._client = Client(path, autostart=autostart)
        return self._client

    def parse(self, cmd: Command, args: list[str]) -> Parsed:
        return cmd.parse(args)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def error(self, text: str) -> None:
        self.err.write(text + "\n")


def run_command(app: App, fn: Callable[[App, list[str]], int], args: list[str]) -> int:
    """Run ``fn`` and map its exceptions to docker's messages and exit statuses."""
    try:
        return fn(app, args)
    except HelpRequested as exc:
        app.out.write(str(exc))
        return 0
    except ArgCountError as exc:
        app.error(f"bulkhead: {exc}")
        return 1
    except FlagError as exc:
        usage = USAGES.get(app.command)
        usage_line = f"\n\nUsage:  bulkhead {usage}" if usage else ""
        app.error(f"{exc}{usage_line}\n\nRun 'bulkhead {app.command} --help' for more information")
        return 125
    except UsageError as exc:
        app.error(f"bulkhead: {exc}\n\nRun 'bulkhead {app.command} --help' for more information")
        return 125
    except Exit as exc:
        if exc.message:
            app.error(exc.message)
        return exc.code
    except APIError as exc:
        app.error(str(exc))
        return 1
    except DaemonUnavailable as exc:
        app.error(str(exc))
        return 1
    except BrokenPipeError:
        return 1
