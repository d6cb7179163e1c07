"""Loading the cgroup device program while signals keep arriving (real kernel).

The verifier gives up with EAGAIN when a signal is pending for the caller; a
daemon starting many containers gets SIGCHLDs all the time. Loading works on
a cgroup v1 host too (attaching is what needs v2).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from bulkhead.cgroups import devicefilter
from bulkhead.cgroups.devices import DEFAULT_RULES, Rule
from bulkhead.linux import bpf

#: A timer this fast breaks off a few percent of single loads on this machine. A real
#: time one (SIGALRM): it fires in the middle of the system call, as a SIGCHLD does;
#: the profiling timer's signal did not break off a single load here.
INTERVAL = 0.002
LOADS = 500


@pytest.fixture
def signal_storm() -> Iterator[None]:
    """SIGALRM every :data:`INTERVAL` seconds, with a handler that does nothing."""
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
    signal.setitimer(signal.ITIMER_REAL, INTERVAL, INTERVAL)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# pytest-timeout's own SIGALRM timer would be replaced by ours: its thread instead
@pytest.mark.timeout(method="thread")
def test_device_program_loads_while_signals_arrive(signal_storm: None) -> None:
    program = devicefilter.compile_rules([Rule(False), *DEFAULT_RULES])
    for _ in range(LOADS):
        fd = bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, program, name="bulkhead_test")
        os.close(fd)
