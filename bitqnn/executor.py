"""Where tasks run: local worker processes, or a Ray cluster. Both move tasks and nothing else.

The interface is what the scheduler (`bitqnn.parallel`) needs to honour time limits and
cancel losers: submit a task under a key, wait for finished keys, and cancel a key at
once. A local worker that must stop is killed (a CP-SAT search cannot be interrupted
from Python) and replaced on demand, so no process outlives its task's deadline, and
closing the executor kills every worker. Workers are spawned, not forked: OR-Tools and
onnxruntime hold threads that a fork would copy half-alive.
"""

from __future__ import annotations

import os
import socket
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any

from bitqnn.tasks import TaskFailure, run_task

EXECUTORS = ("local", "ray")


def default_jobs() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class ExecutorError(Exception):
    """The executor cannot start (Ray missing, cluster unreachable): a user-facing error."""


def _serve(conn: Connection) -> None:
    """A worker process: load what tasks use, say so, then answer tasks until the parent
    closes the pipe. Loading first keeps import time out of every task's time limit."""
    import bitqnn.answer  # noqa: F401 - every kind of obligation's pipeline
    import bitqnn.backdoor_verify  # noqa: F401
    import bitqnn.engines.registry  # noqa: F401
    import bitqnn.error_verify  # noqa: F401
    import bitqnn.fault_verify  # noqa: F401
    import bitqnn.onnx_io  # noqa: F401 - replay on onnxruntime

    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        key, task = message
        conn.send((key, run_task(task)))


class _Worker:
    def __init__(self) -> None:
        context = get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.key: Any = None

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class LocalExecutor:
    """`jobs` worker processes on this machine, all started when the first task is wanted
    (a run that the bounds settle starts none) and replaced when killed."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ExecutorError(f"--jobs must be at least 1, got {jobs}")
        self.capacity = jobs
        self._workers: list[_Worker] = []
        self._started = False

    @property
    def free(self) -> int:
        """Workers ready for a task now."""
        if not self._started:
            self._started = True
            self._workers = [_Worker() for _ in range(self.capacity)]
        return sum(w.ready and w.key is None for w in self._workers)

    def submit(self, key: Any, task) -> None:
        worker = next((w for w in self._workers if w.ready and w.key is None), None)
        if worker is None:
            raise RuntimeError("no free worker: submit only while `free` is positive")
        worker.key = key
        worker.conn.send((key, task))

    def wait(self, timeout: float) -> list[tuple[Any, Any]]:
        """Finished (key, value) pairs, waiting up to `timeout` for the first."""
        watched = {w.conn: w for w in self._workers if w.key is not None or not w.ready}
        finished = []
        for conn in wait(list(watched), timeout=max(0.0, timeout)):
            worker = watched[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the process died: under its task, or while loading
                if worker.key is not None:
                    finished.append((worker.key, TaskFailure(
                        f"worker process exited with code {worker.process.exitcode}")))
                self._replace(worker)
                continue
            if message == ("ready",):
                worker.ready = True
                continue
            worker.key = None
            finished.append(message)
        return finished

    def cancel(self, key: Any) -> None:
        for worker in [w for w in self._workers if w.key == key]:
            self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)
        self._workers.append(_Worker())

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers.clear()


class RayExecutor:
    """Tasks as Ray remote calls, one CPU each; cancelled tasks are force-killed by Ray."""

    def __init__(self, address: str | None, jobs: int | None) -> None:
        try:
            import ray
        except ImportError as error:
            raise ExecutorError("--executor ray needs Ray: pip install \"bitqnn[cluster]\"") from error
        self._ray = ray
        self._started = not ray.is_initialized()
        if address:
            _reachable(address)
        if self._started:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                         **({} if address else {"include_dashboard": False}))
            except Exception as error:  # noqa: BLE001 - Ray raises many kinds for an unreachable cluster
                raise ExecutorError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                                    f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from error
        self.capacity = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        self._refs: dict[Any, Any] = {}

    @property
    def free(self) -> int:
        return self.capacity - len(self._refs)

    def submit(self, key: Any, task) -> None:
        self._refs[key] = self._remote.remote(task)

    def wait(self, timeout: float) -> list[tuple[Any, Any]]:
        if not self._refs:
            return []
        by_ref = {ref: key for key, ref in self._refs.items()}
        ready, _ = self._ray.wait(list(by_ref), num_returns=1, timeout=max(0.0, timeout))
        if ready:
            ready, _ = self._ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        finished = []
        for ref in ready:
            key = by_ref[ref]
            del self._refs[key]
            try:
                finished.append((key, self._ray.get(ref)))
            except Exception as error:  # noqa: BLE001 - a task that died on the cluster
                finished.append((key, TaskFailure(f"Ray task failed: {str(error).splitlines()[0]}")))
        return finished

    def cancel(self, key: Any) -> None:
        ref = self._refs.pop(key, None)
        if ref is not None:
            self._ray.cancel(ref, force=True)

    def close(self) -> None:
        for key in list(self._refs):
            self.cancel(key)
        if self._started:
            self._ray.shutdown()


def _reachable(address: str, seconds: float = 5.0) -> None:
    """Fail fast on an address nothing listens at: Ray itself retries for minutes."""
    host_port = address.split("://", 1)[-1]
    if host_port == "auto" or ":" not in host_port:
        return
    host, port = host_port.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=seconds):
            pass
    except (OSError, ValueError) as error:
        raise ExecutorError(f"cannot connect to Ray at {address}: {error}") from error


def make_executor(kind: str, jobs: int | None, address: str | None = None):
    if kind == "local":
        return LocalExecutor(jobs or default_jobs())
    if kind == "ray":
        return RayExecutor(address, jobs)
    raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
