"""Independent tasks run at once: a build's formats are packed side by side (and its tree's
checks run meanwhile), as one packer's time is mostly an external tool's (mke2fs,
mkfs.erofs) or hashing, which leave the GIL to the other's Python (the initrd's cpio writer).

A failure in one task, or a Ctrl-C or SIGTERM (which reach the main thread while it waits),
cancels the runner's commands, so the other tasks end soon after; the error is raised once
every task has ended, so nothing still writes into a staging directory being removed."""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Sequence, TypeVar

from osbuilder.foundation.runner import Runner

T = TypeVar("T")


def side_by_side(tasks: Sequence[Callable[[], T]], runner: Runner,
                 meanwhile: Callable[[], None] | None = None) -> list[T]:
    """Each task's result, in the tasks' order; the first failure is raised. `meanwhile` runs
    in the calling thread while the tasks do; its failure is the one raised whenever it fails,
    as when it ran before them (the build's checks of its tree, before packing it)."""
    if len(tasks) < 2 and meanwhile is None:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=max(len(tasks), 1), thread_name_prefix="osbuilder-task") as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            if meanwhile is not None:
                meanwhile()
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                raise failed.exception()  # type: ignore[misc]
            return [future.result() for future in futures]
        except BaseException:
            runner.cancel()
            wait(futures)
            raise
        finally:
            runner.resume()
