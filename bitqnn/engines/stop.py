"""A stop request shared between engines racing in threads of one process.

Both solvers release the GIL while they search, so two engines can race in threads; the
loser must then be stopped mid-search, which each solver allows only through its own
object (CP-SAT's `stop_search`, SCIP's `InterruptSolve`). An engine registers that call
for as long as its search runs; `stop` calls every registered one. Both solvers drop a
call that comes before their search has started (measured with OR-Tools 9.15: SCIP
interrupted before `Solve` still ran its full 5 s limit), so a hook can be reached too
early to count; `ThreadRace` therefore repeats `stop` until its losers have returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StopSignal:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._hooks: list[Callable[[], object]] = []

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    @contextmanager
    def hook(self, interrupt: Callable[[], object]) -> Iterator[None]:
        """Within the block, `stop` calls `interrupt`; a stop that came first calls it at once."""
        with self._lock:
            self._hooks.append(interrupt)
            stopped = self._stopped
        if stopped:
            interrupt()
        try:
            yield
        finally:
            with self._lock:
                self._hooks.remove(interrupt)
