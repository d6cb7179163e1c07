"""The one interface the runtime uses for a container's cgroup, whatever the host.

A :class:`CgroupManager` stands for one container's cgroup (on v1: the
same path in every hierarchy). Its life in the runtime::

    cg = new_manager("/bulkhead/<id>")
    cg.create()                              # mkdir in each hierarchy
    cg.apply(spec.linux.resources, initial=True)
    cg.add_pid(init_pid)                     # before the container runs user code
    ...
    cg.freeze(); cg.thaw()                   # pause / resume
    cg.stats(); cg.pids(); cg.oom_events()   # events, ps
    cg.apply(new_resources)                  # update
    cg.kill_all(signal.SIGKILL)              # kill --all, delete --force
    cg.destroy()                             # rmdir, leaf first

Every method raises :class:`~bulkhead.errors.CgroupError` (or, for
requests this bulkhead or host cannot do at all,
:class:`~bulkhead.errors.UnsupportedError`); none lets an ``OSError``
escape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # imported when used: a container start needs neither
    from bulkhead.cgroups.events import OOMWatcher
    from bulkhead.cgroups.resources import Resources
    from bulkhead.cgroups.stats import Stats

FreezerState = Literal["THAWED", "FROZEN"]


class CgroupManager(Protocol):
    """A container's cgroup: create, configure, join, observe, signal, remove."""

    #: 1 for the v1 (legacy or hybrid) manager, 2 for the v2 (unified) one.
    version: int

    @property
    def cgroups_path(self) -> str:
        """The ``linux.cgroupsPath`` this manager was made for (cleaned)."""
        ...

    def create(self) -> None:
        """Create the cgroup (and missing parents) in every hierarchy; fine if it exists."""
        ...

    def add_pid(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup."""
        ...

    def apply(self, resources: Resources | None, *, initial: bool = False) -> None:
        """Set the limits of ``linux.resources``; ``None`` fields stay as they are.

        Every value is checked before anything is written, so a bad update
        changes nothing. ``initial=True`` is the first apply at ``create``:
        the device rules are then always written (deny all, the spec's
        rules, the standard devices) even when the spec lists none.
        """
        ...

    def freeze(self) -> None:
        """Stop every process of the cgroup and wait until they are stopped."""
        ...

    def thaw(self) -> None:
        """Let the processes of the cgroup run again."""
        ...

    def state(self) -> FreezerState:
        """``FROZEN`` (or freezing) or ``THAWED``."""
        ...

    def pids(self) -> list[int]:
        """Every process in the cgroup and the cgroups below it."""
        ...

    def stats(self) -> Stats:
        """Memory, CPU, pids, block I/O and huge page use (what the host accounts)."""
        ...

    def oom_events(self) -> OOMWatcher:
        """A watcher whose ``wait()`` returns when the OOM killer strikes in this cgroup."""
        ...

    def kill_all(self, sig: int) -> None:
        """Send ``sig`` to every process of the cgroup (processes gone meanwhile are fine)."""
        ...

    def destroy(self) -> None:
        """Remove the cgroup and any below it, leaf first; fine if it is already gone.

        Waits briefly (EBUSY) for processes that are still exiting; raises
        CgroupError if some cgroup stays busy.
        """
        ...

    def exists(self) -> bool:
        """Whether the cgroup exists in any hierarchy."""
        ...

    def path(self, controller: str) -> str:
        """The directory of the cgroup for ``controller`` (``memory``, ``cpu``, ...).

        On v2 every controller shares one directory (``""`` asks for it).
        """
        ...

    def paths(self) -> dict[str, str]:
        """Every controller (v2: ``""``) and its directory: what runc's state.json records."""
        ...
