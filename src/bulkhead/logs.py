"""Warnings and debug notes from library code, without importing :mod:`logging` at start-up.

``import logging`` costs the runtime's CLI about 10 ms, a tenth of a
container start, so the modules on the start path do not import it. They
call :func:`warning` instead, which goes, in this order, to:

1. the *sink* a front end installed with :func:`set_sink` (the
   ``bulkhead-runtime`` CLI installs its runc-style logger, so warnings land
   in ``--log`` in text or JSON like everything else it reports);
2. the standard :mod:`logging` tree, when the program embedding bulkhead has
   imported it (then it may have configured handlers: we use them);
3. a plain ``warning: ...`` line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: A front end's receiver of warnings: ``sink(level, message)``.
Sink = Callable[[str, str], None]

_sink: Sink | None = None


def set_sink(sink: Sink | None) -> None:
    """Send every later warning to ``sink`` (None: back to the default)."""
    global _sink
    _sink = sink


def warning(logger_name: str, message: str) -> None:
    """Report ``message`` as a warning of logger ``logger_name``."""
    if _sink is not None:
        _sink("warning", message)
        return
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(logger_name).warning("%s", message)
        return
    sys.stderr.write(f"warning: {message}\n")


def debug(logger_name: str, message: str) -> None:
    """Report ``message`` at debug level (shown by ``bulkhead-runtime --debug``)."""
    if _sink is not None:
        _sink("debug", message)
        return
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(logger_name).debug("%s", message)
