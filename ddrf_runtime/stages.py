"""Two small threading primitives that let reading, conditioning, the network and writing overlap.

Both keep order (so results never depend on timing or thread count), hold a bounded number of items (so
memory stays flat in scene size) and hand a worker's exception to the caller. The heavy work they run
releases the GIL: GDAL reads and writes, numba kernels (``nogil``), numpy's random fill, ONNX Runtime.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()  # end-of-queue marker for the writer


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, depth: int,
                initializer: Callable[[], None] | None = None, name: str = "ddrf-prepare") -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads (named ``name``), results yielded in order, at most ``depth`` in
    flight. ``items`` is consumed on the calling thread, so a generator there overlaps with the workers.

    An exception raised by ``fn`` is re-raised here, at its item. Leaving the loop early (an error
    downstream, Ctrl-C) cancels what has not started and waits for what has.
    """
    if workers < 1 or depth < 1:
        raise ValueError(f"workers and depth must be >= 1, got {workers} and {depth}")
    with ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=initializer) as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class OrderedWorker:
    """Runs submitted calls one after another on a background thread, at most ``depth`` waiting.

    ``submit`` re-raises a failure of an earlier call (so the caller stops producing work); ``close`` waits
    for the queue to drain and re-raises too. As a context manager it always joins the thread, so the
    resources the calls use (an open dataset) can be closed safely afterwards.
    """

    def __init__(self, depth: int, name: str = "ddrf-writer") -> None:
        self._calls: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            call = self._calls.get()
            if call is _DONE:
                return
            if self._error is None:  # after a failure, drain without running
                try:
                    call()
                except BaseException as e:  # handed to the caller by submit/close
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._raise()
        self._calls.put(lambda: fn(*args))

    def close(self) -> None:
        """Wait for every submitted call; re-raise the first failure."""
        if self._thread.is_alive():
            self._calls.put(_DONE)
            self._thread.join()
        self._raise()

    def __enter__(self) -> OrderedWorker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._error = self._error or exc  # the caller's error wins; queued calls are skipped
        self._calls.put(_DONE)
        self._thread.join()
