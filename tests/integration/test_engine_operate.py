"""The engine's pause/unpause/update/commit driven directly (no HTTP), on the real kernel.

What only the engine can show: the events it emits, that ``commit`` reads
the container's layer while its cgroup is frozen (the commit's file work is
wrapped to look at ``freezer.state`` when it runs) and thaws it even when
the commit fails, and how a kill treats a paused container (moby's rule:
a signal other than SIGKILL or the container's StopSignal leaves it
frozen).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engine_fixtures import Daemon
from tests.integration.test_engine_lifecycle import engine_roots, make_engine, request, run

from bulkhead.engine import filesystem
from bulkhead.engine.engine import Engine
from bulkhead.errors import ContainerNotRunning, SpecError, WrongState

__all__ = ["engine_roots"]

SLEEPER = ["sh", "-c", "while :; do sleep 0.1; done"]


@pytest.fixture(params=["bulkhead", "runc"])
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def freezer_state(engine: Engine, cid: str) -> str:
    parent = engine.config.cgroup_parent.lstrip("/")
    return Path("/sys/fs/cgroup/freezer", parent, cid, "freezer.state").read_text().strip()


def actions(engine: Engine, cid: str) -> list[str]:
    return [e.action for e in engine.events.history() if e.actor_id == cid]


def test_pause_unpause_events_and_errors(engine_roots: Daemon, runtime: str) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(SLEEPER, Runtime=runtime), name="pp")
        with pytest.raises(ContainerNotRunning, match=f"Container {cid} is not running"):
            await engine.pause(cid)
        await engine.start(cid)
        await engine.pause("pp")
        assert engine.get(cid).state.status == "paused"
        assert freezer_state(engine, cid) == "FROZEN"
        with pytest.raises(WrongState, match="is already paused"):
            await engine.pause(cid)
        # a signal that is neither SIGKILL nor the stop signal leaves it frozen (moby)
        engine.store.update(cid, lambda x: x.config.update(StopSignal="SIGTERM"))
        await engine.kill(cid, "SIGUSR2")
        assert engine.get(cid).state.paused
        assert freezer_state(engine, cid) == "FROZEN"
        await engine.unpause(cid)
        assert engine.get(cid).state.status == "running"  # pid 1 ignores USR2
        with pytest.raises(WrongState, match=f"Container {cid} is not paused"):
            await engine.unpause(cid)
        # SIGKILL thaws it (a v1-frozen task dies only when thawed)
        await engine.pause(cid)
        await engine.kill(cid, "SIGKILL")
        assert await asyncio.wait_for(engine.wait(cid), 30) == (137, None)
        assert not engine.get(cid).state.paused
        assert actions(engine, cid).count("pause") == 2
        assert actions(engine, cid).count("unpause") >= 1  # the kill may thaw it first
        await engine.remove(cid, force=True)

    run(lambda: make_engine(engine_roots), body)


def test_commit_freezes_during_the_copy_and_thaws_after(
    engine_roots: Daemon, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = filesystem.commit_image
    seen: list[str] = []
    fail = {"now": False}

    async def body(engine: Engine) -> None:
        def spying(*args: Any, **kwargs: Any) -> str:
            seen.append(freezer_state(engine, str(kwargs["container_id"])))
            if fail["now"]:
                raise SpecError("the commit failed half-way")
            image_id: str = real(*args, **kwargs)
            return image_id

        monkeypatch.setattr(filesystem, "commit_image", spying)
        cid, _ = await engine.create(request(SLEEPER, Runtime=runtime), name="cc")
        await engine.start(cid)
        await engine.commit(cid, repo="snap", tag="1")
        assert seen == ["FROZEN"]
        assert freezer_state(engine, cid) == "THAWED"
        assert engine.get(cid).state.status == "running"
        assert actions(engine, cid)[-3:] == ["pause", "commit", "unpause"]  # moby's order

        await engine.commit(cid, repo="snap", tag="2", pause=False)
        assert seen[-1] == "THAWED"

        fail["now"] = True
        with pytest.raises(SpecError, match="half-way"):
            await engine.commit(cid, repo="snap", tag="3")
        assert seen[-1] == "FROZEN"
        assert freezer_state(engine, cid) == "THAWED"
        assert not engine.get(cid).state.paused

        # a paused container stays paused
        fail["now"] = False
        await engine.pause(cid)
        await engine.commit(cid, repo="snap", tag="4")
        assert engine.get(cid).state.paused and freezer_state(engine, cid) == "FROZEN"
        await engine.remove(cid, force=True)

    run(lambda: make_engine(engine_roots), body)


def test_update_event_and_stopped_container(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(SLEEPER), name="uu")
        warnings = await engine.update(cid, {"Memory": 32 << 20, "PidsLimit": 10})
        assert warnings == []
        c = engine.get(cid)
        assert (c.host_config["Memory"], c.host_config["PidsLimit"]) == (32 << 20, 10)
        assert actions(engine, cid)[-1] == "update"
        await engine.start(cid)
        parent = engine.config.cgroup_parent.lstrip("/")
        mem = Path("/sys/fs/cgroup/memory", parent, cid, "memory.limit_in_bytes")
        assert mem.read_text().strip() == str(32 << 20)
        await engine.remove(cid, force=True)

        # created, with its runtime container made for an early attach: its cgroup
        # exists already, so the update goes to it too
        cid, _ = await engine.create(request(SLEEPER), name="early")
        assert await engine.attach_monitor(cid) is not None
        await engine.update(cid, {"Memory": 40 << 20, "MemorySwap": 80 << 20})
        mem = Path("/sys/fs/cgroup/memory", parent, cid, "memory.limit_in_bytes")
        assert mem.read_text().strip() == str(40 << 20)
        await engine.start(cid)
        assert mem.read_text().strip() == str(40 << 20)
        await engine.remove(cid, force=True)

    run(lambda: make_engine(engine_roots), body)
