"""Silencing what native solvers print, safely from several threads at once.

SCIP and SoPlex print from C (for instance that an LP tolerance was raised to 1e-10 for
want of GMP, which the margin already covers), which would interleave with bitqnn's own
table and progress lines, so their solves run with file descriptors 1 and 2 pointed at
/dev/null. `auto` runs two SCIP solves at once (the `milp` racer and the attack's
neighbourhood search), and a save-and-restore per solve is then wrong: the second solve
saves the first one's /dev/null and restores it last, silencing the process for good
(measured: a speed benchmark's log stopped mid-run while the run went on). So the first
solve in redirects, the last one out restores.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_saved: list[int] = []  # the real descriptors 1 and 2 while any solve is silenced
_inside = 0


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    global _inside
    with _lock:
        if _inside == 0:
            sys.stdout.flush()
            sys.stderr.flush()
            _saved[:] = [os.dup(1), os.dup(2)]
            with open(os.devnull, "w") as sink:
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                os.dup2(_saved[0], 1)
                os.dup2(_saved[1], 2)
                for fd in _saved:
                    os.close(fd)
                _saved.clear()
