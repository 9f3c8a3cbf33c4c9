"""The ``pools`` bench suite: its plan, a tiny run through the harness, the message path.

Runs are tiny and go through the harness as ``asyncperf bench`` does (plan,
``run_cases``, ``report``) with the console writing to a buffer. Nothing
asserts a timing: only the structure of the plan, that every case produced
one finite, positive figure, that the side figures are consistent, and that
the pooled message path builds the same requests and gives every buffer and
state object back.
"""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from asyncperf.tools.bench import memory_pools
from asyncperf.tools.bench._harness import Config, Harness, Result
from asyncperf.tools.bench.memory_pools import (
    BAR_SIZES,
    IN_FLIGHT,
    MESSAGE_CASE,
    SIZES,
    MessagePath,
    MessageState,
    run_message_path,
)


def tiny() -> Config:
    return Config(
        jobs=200,
        repeat=2,
        quick=True,
        loops=("asyncio",),
        memory_items=100,
        queue_depths=(10, 50),
    )


def expected_cases() -> set[str]:
    cases = {
        memory_pools.buffer_case(shape, size) for shape in memory_pools.SHAPES for size in SIZES
    }
    cases |= {memory_pools.mixed_case(shape) for shape in memory_pools.SHAPES}
    cases |= {
        memory_pools.object_case(kind, shape)
        for kind in ("cheap", "costly")
        for shape in memory_pools.OBJECT_SHAPES
    }
    return cases | {MESSAGE_CASE}


# -- the plan ----------------------------------------------------------------------------


def test_quick_plan_has_every_case_with_its_two_contenders() -> None:
    plan = memory_pools.SUITE.plan(tiny(), "asyncio")
    by_case: dict[str, set[str]] = {}
    for case in plan.cases:
        by_case.setdefault(case.case, set()).add(case.contender)
    assert set(by_case) == expected_cases()
    # 6 sizes x 3 shapes, mixed x 3 shapes, 2 objects x 2 shapes, the message path.
    assert len(by_case) == 6 * 3 + 3 + 4 + 1
    for name, contenders in by_case.items():
        if name == MESSAGE_CASE:
            assert contenders == {"unpooled", "pooled"}
        elif " object · " in name:
            assert contenders == {"new", "pooled"}
        else:
            assert contenders == {"fresh", "pooled"}, name
    assert len(plan.cases) == 2 * len(by_case)
    # --quick is tiny: every buffer case does few operations, but each in-flight task some.
    for case in plan.cases:
        assert IN_FLIGHT * 2 <= case.items <= 1_000, case
    assert any("tracemalloc" in note for note in plan.notes)


def test_sizes_cover_every_default_class_and_one_oversize() -> None:
    import asyncperf as ap

    assert SIZES[:-1] == ap.DEFAULT_SIZE_CLASSES
    assert SIZES[-1] > ap.DEFAULT_SIZE_CLASSES[-1]
    assert set(BAR_SIZES) <= set(SIZES)


def test_mixed_sizes_are_seeded_and_within_range() -> None:
    sizes = memory_pools.mixed_sizes(500)
    assert sizes == memory_pools.mixed_sizes(500)
    assert all(1024 <= n <= 256 * 1024 for n in sizes)
    assert len(set(sizes)) > 100  # a spread, not one size


# -- a tiny run through the harness --------------------------------------------------------


def test_tiny_run_gives_one_finite_figure_per_case_and_consistent_side_figures() -> None:
    config = tiny()
    h = Harness(config, Console(file=io.StringIO(), width=200))
    plan = memory_pools.SUITE.plan(config, "asyncio")
    results = h.run_cases(memory_pools.NAME, plan.cases, "asyncio")
    memory_pools.SUITE.report(h, "asyncio", results)

    keys = [(r.case, r.contender) for r in results]
    assert len(keys) == len(set(keys)) == len(plan.cases)
    for result in results:
        assert result.repeat == config.repeat
        assert all(math.isfinite(s) and s > 0 for s in result.samples), result
        assert 0 < result.best <= result.value <= result.worst, result

    side: dict[tuple[str, str], Result] = {
        (r.case, r.contender): r for r in h.results[memory_pools.NAME] if r not in results
    }
    # Every case has its tracemalloc peak: positive, and at least the buffers held at once.
    for result in results:
        peak = side[(f"{result.case}/peak_kib", result.contender)]
        assert peak.value > 0
    flight_64k = memory_pools.buffer_case(memory_pools.FLIGHT, 64 * 1024)
    assert side[(f"{flight_64k}/peak_kib", "fresh")].value >= IN_FLIGHT * 64

    # The message path: counts are whole collections scaled, and they add up.
    store = memory_pools._STORES["asyncio"]
    for contender in ("unpooled", "pooled"):
        runs = store.messages[contender]
        assert len(runs) == config.repeat  # the warm-up is not kept
        for run in runs:
            assert run.replies == run.messages
            assert all(count >= 0 for count in run.collections)
            assert 0 <= run.max_pause_s <= run.pause_s <= run.wall_s
            figures = run.figures()
            assert figures["collections"] == pytest.approx(
                figures["gen0"] + figures["gen1"] + figures["gen2"]
            )
        pause = side[(f"{MESSAGE_CASE}/gc_pause_ms", contender)]
        assert pause.value >= 0
    for run in store.messages["pooled"]:
        assert run.buffers is not None
        assert run.states is not None
        assert run.buffers.in_use == 0
        assert run.states.in_use == 0

    # Bars: one-at-a-time and in-flight at 64 and 256 KiB, and the GC bar; none on bursts.
    bars = h.bars[memory_pools.NAME]
    assert {(bar.case, bar.op) for bar in bars} == {
        *(
            (memory_pools.buffer_case(shape, size), ">=")
            for shape in (memory_pools.ONE, memory_pools.FLIGHT)
            for size in BAR_SIZES
        ),
        (MESSAGE_CASE, "<="),
    }
    for bar in bars:
        assert math.isfinite(bar.ratio)
        assert bar.ratio >= 0
    output = h.console.file
    assert isinstance(output, io.StringIO)
    text = output.getvalue()
    for title in ("pools: buffers", "pools: objects", "pools: GC in the simulator"):
        assert title in text


# -- the message path ------------------------------------------------------------------


async def test_pooled_message_path_gives_everything_back() -> None:
    run = await run_message_path(pooled=True, messages=300, concurrency=8)
    assert run.replies == run.messages == 300
    assert run.buffers is not None
    assert run.states is not None
    assert run.buffers.in_use == 0
    assert run.states.in_use == 0
    # One receive buffer and one state per message, reused: far fewer made than used.
    assert run.buffers.acquires == 300
    assert run.states.acquires == 300
    assert run.states.misses <= 8
    assert run.buffers.hits > 0
    assert run.buffers.oversize_acquires == 0


async def test_unpooled_message_path_uses_no_pool() -> None:
    run = await run_message_path(pooled=False, messages=50, concurrency=4)
    assert run.replies == 50
    assert run.buffers is None
    assert run.states is None


async def test_pooled_requests_are_the_simulators_requests() -> None:
    """The pooled path serialises exactly the text the unpooled (simulator's) path does."""
    path = MessagePath(concurrency=4)
    try:
        for index in range(120):
            state = path.states.acquire()
            try:
                pooled = path.request_pooled(index, state)
            finally:
                path.states.release(state)
            assert pooled == path.request_unpooled(index)
            # Grow the session's history as the path does, so later requests carry turns.
            await path.message(index, pooled=index % 2 == 0)
        assert max(len(history) for history in path.histories) >= 1
        request = json.loads(path.request_unpooled(0))
        assert request["messages"][-1]["role"] == "user"
    finally:
        path.close()


def test_message_state_clear_forgets_the_last_message() -> None:
    state = MessageState(history=2)
    state.pairs[0][0]["content"] = "question"
    state.messages.append(state.pairs[0][0])
    state.request["context"] = "context"
    state.clear()
    assert state.messages == []
    assert state.request["context"] == ""
    assert all(user["content"] == assistant["content"] == "" for user, assistant in state.pairs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"messages": 0}, "messages"), ({"messages": 5, "concurrency": 0}, "concurrency")],
)
async def test_message_path_refuses_bad_sizes(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be >= 1"):
        await run_message_path(pooled=True, **kwargs)
