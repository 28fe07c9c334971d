"""One function run over many tasks in spawned worker processes, behind one progress bar: the
way the data check, the cache's filler and the phantom spread their work over processes.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


def run_parallel(
    function: Callable[[Task], Result],
    tasks: Sequence[Task],
    *,
    workers: int,
    desc: str,
    unit: str,
    progress: bool = True,
    ordered: bool = True,
    initializer: Callable[..., object] | None = None,
    initargs: tuple = (),
    serial_setup: Callable[[], object] | None = None,
    chunksize: int | None = None,
    max_chunksize: int = 64,
) -> Iterator[Result]:
    """``function(task)`` of every task, as a generator, behind a tqdm bar on stderr (``desc``,
    ``unit``; hidden when not ``progress``) that counts a task once the loop over the generator
    has handled its result.

    With ``workers`` > 1 and more than one task, the tasks run in that many processes started
    by "spawn", each of which first runs ``initializer(*initargs)``; the results come in task
    order (``imap``), or as they are done when not ``ordered`` (``imap_unordered``), sent in
    chunks of ``chunksize`` tasks (by default about eight chunks per worker, at most
    ``max_chunksize``). Otherwise the tasks run here, in order, after ``serial_setup()``; the
    initializer is not run here, as it may do what only a worker process should.

    The pool is closed and joined when the loop over the generator ends, at its end or by an
    error or an interrupt: iterate it in a ``for`` statement (or ``list``), or close it.
    """
    # imported here: the worker processes import the callers' modules, and need no bar
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress, file=sys.stderr)
    pool = None
    if workers <= 1 or len(tasks) <= 1:
        if serial_setup is not None:
            serial_setup()
        results = map(function, tasks)
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer, initargs)
        if chunksize is None:
            chunksize = max(1, min(max_chunksize, len(tasks) // (workers * 8)))
        spread = pool.imap if ordered else pool.imap_unordered
        results = spread(function, tasks, chunksize=chunksize)
    try:
        for result in results:
            yield result
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
