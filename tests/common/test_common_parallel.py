"""`common.parallel.run_parallel`: the same results here and in spawned processes, in task
order unless told otherwise, and the pool closed when the loop over it stops early."""

from __future__ import annotations

import multiprocessing

import pytest

from common.parallel import run_parallel


def test_here_in_order_after_the_serial_setup():
    calls = []
    results = list(
        run_parallel(
            abs,
            [-3, 1, -2],
            workers=1,
            desc="t",
            unit="n",
            progress=False,
            initializer=calls.append,
            initargs=("pool",),
            serial_setup=lambda: calls.append("here"),
        )
    )
    assert results == [3, 1, 2]
    assert calls == ["here"]  # the pool's initializer runs in worker processes only


def test_one_task_runs_here_whatever_the_workers():
    calls = []
    assert list(
        run_parallel(
            abs,
            [-5],
            workers=4,
            desc="t",
            unit="n",
            progress=False,
            serial_setup=lambda: calls.append("here"),
        )
    ) == [5]
    assert calls == ["here"]


@pytest.mark.parametrize("ordered", [True, False])
def test_processes_give_every_result(ordered):
    tasks = list(range(-20, 20))
    results = list(
        run_parallel(
            abs,
            tasks,
            workers=2,
            desc="t",
            unit="n",
            progress=False,
            ordered=ordered,
            max_chunksize=3,
        )
    )
    expected = [abs(task) for task in tasks]
    assert (results if ordered else sorted(results)) == (expected if ordered else sorted(expected))


def test_an_error_in_the_loop_closes_the_pool():
    seen = []
    with pytest.raises(ValueError, match="stop"):
        for result in run_parallel(
            abs, [-1, -2, -3, -4], workers=2, desc="t", unit="n", progress=False, chunksize=1
        ):
            seen.append(result)
            raise ValueError("stop")
    assert seen == [1]
    assert not multiprocessing.active_children()  # closed and joined before the error went on
