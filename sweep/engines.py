"""Where the sweep's grid points run: one after another in this process (local, the default, which needs nothing
more), or spread over the workers of a Dask cluster (dask), one point per worker thread.

    python -m dask scheduler                                             # one machine: tcp://HOST:8786
    python -m dask worker tcp://HOST:8786 --nthreads 1 --memory-limit 0  # each machine (repo root, same venv)
    python -m sweep --engine dask --scheduler tcp://HOST:8786 --out /shared/sweep-flowers ...

Every grid point is already an ordinary, resumable run (sweep.run.run_point), so an engine only has to run those
calls somewhere and hand their rows back: points are submitted cheapest first, no more at once than the workers
have threads (so --max-minutes still decides on the rest, as on one machine), and rows come back as points finish.
Dask places them, ships the settings and the rows, and runs a point whose worker was lost again on another worker
(distributed.scheduler.allowed-failures, 3 by default); a point that still fails is rows with an "engine:" error.

Why Dask (distributed) and not Ray: it is pure Python (a worker is `pip install distributed` and one command, on
any machine Python runs on, 32-bit Raspberry Pi OS included, where Ray has no wheel), small (42 MB installed with
everything it adds to this venv), with nothing else to run than a scheduler and workers, where Ray brings a
compiled core with its own object store and daemons; and a task here is a whole run of minutes, so Ray's
low-latency scheduling buys nothing. Keras Tuner's distributed mode tunes one model-building function through a
gRPC oracle; a point here is train, export and benchmark, not a Keras model.

What the machines share: the same checkout and venv (`make setup`; requirements/distributed.txt comes with it),
the scheduler and the workers started with `python -m dask` in the repo root (the scheduler unpickles the tasks
and the workers run them: both import this project; the sweep checks that first), the sweep started in the same
folder (paths given relative are relative to it; a worker elsewhere refuses them), and the sweep folder on storage
they all mount at the same path, so that a point done by one machine is reused by all, a rerun resumes wherever it
lands, and `make bundle` finds the artifacts. Rows travel back to the client, which writes the report: without
shared storage the sweep still completes, but each point's files stay on the machine that made it
(sweep_engine.json says which) and a rerun may train a point again elsewhere. One worker per machine, with
`--nthreads 1` (one point at a time: TensorFlow uses every core, and each point's benchmark times inference, which a
second point training beside it would slow), and `--memory-limit 0` (training memory is TensorFlow's, and Dask's
default share of RAM per thread would restart a worker mid-point). With --device this, each point's latency is
measured on the worker that ran it (the device column names that machine): use alike machines, or a Pi target.
A point holds a lock on its run folder (SWEEP/.locks/POINT, fcntl) while it runs: a point still running on a
worker after its client was stopped goes on to its end there, and a rerun's call for it waits, then reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contracts.console import first_line, log
from sweep.rows import point_name
from sweep.settings import SweepError, SweepSettings

CONNECT_TIMEOUT_S = 20  # a scheduler that does not answer in this long is not running (or not reachable)
WORKER_WAIT_S = 120  # how long a sweep waits for the first worker to join before saying how to start one


@dataclass
class Done:
    """One finished grid point, as an engine hands it back."""

    alpha: float
    size: int
    rows: list[dict]  # run_point's rows; empty when `error` says why the engine could not run the point
    trained: bool  # whether this call trained (a fresh point), for the time estimate of the next ones
    seconds: float  # the point's own wall time where it ran (queueing excluded)
    worker: str  # where it ran: "local", or the Dask worker's name and machine
    error: str = ""  # "engine: ..." when the point raised instead of returning rows (e.g. its workers all died)


def run_locked(fn: Callable, s: SweepSettings, base, alpha: float, size: int, host: str) -> tuple:
    """fn(s, base, alpha, size, host) (sweep.run.run_point) holding the point's lock; returns (rows, trained,
    seconds). The lock is an flock on SWEEP/.locks/POINT: released by the kernel when its process dies, and
    honoured across machines by NFS (v4, or v3 with lockd)."""
    lock = s.sweep_dir / ".locks" / point_name(alpha, size)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"--- {lock.name}: another process is running this point (lock {lock}); waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        t = time.monotonic()
        rows, trained = fn(s, base, alpha, size, host)
        return rows, trained, time.monotonic() - t


def _on_worker(fn: Callable, s: SweepSettings, base, alpha: float, size: int, cwd: str) -> tuple:
    """What a Dask worker runs for one point: run_locked with this machine's name, plus where it ran."""
    import socket

    from distributed import get_worker

    from benchmarks.device.machine import default_device_name

    relative = [p for p in (s.out, base.data) if p not in ("digits", "cats_vs_dogs") and not Path(p).is_absolute()]
    if relative and os.getcwd() != cwd:
        raise SweepError(f"worker runs in {os.getcwd()}, the sweep in {cwd}, and {' and '.join(relative)} is "
                         f"relative: start `dask worker` from {cwd} on every machine, or pass --out and --data as "
                         "absolute paths on storage they share")  # fmt: skip
    rows, trained, seconds = run_locked(fn, s, base, alpha, size, default_device_name())
    return rows, trained, seconds, f"{get_worker().name} ({socket.gethostname()})"


class LocalEngine:
    """Runs each point in this process, one at a time: the sweep as it always was."""

    name = "local"

    def __init__(self):
        self._queue: list[tuple] = []

    @property
    def running(self) -> int:
        return len(self._queue)

    def slots(self) -> int:
        return 1

    def submit(self, fn: Callable, s: SweepSettings, base, alpha: float, size: int, host: str) -> None:
        self._queue.append((fn, s, base, alpha, size, host))

    def next_done(self) -> Done:
        fn, s, base, alpha, size, host = self._queue.pop(0)
        rows, trained, seconds = run_locked(fn, s, base, alpha, size, host)
        return Done(alpha, size, rows, trained, seconds, "local")

    def close(self) -> None:
        pass


class DaskEngine:
    """Submits points to a Dask scheduler and collects them as they finish (distributed.as_completed)."""

    name = "dask"

    def __init__(self, address: str):
        from distributed import Client, as_completed

        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            why = f"no Dask scheduler answered ({first_line(e)})"
            raise SweepError(f"--scheduler {address}: {why}; start one with `python -m dask scheduler` in the repo "
                             "root and pass the address it prints") from None  # fmt: skip
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (OSError, TimeoutError) as e:
            self.client.close()
            raise SweepError(f"--scheduler {address}: no worker joined in {WORKER_WAIT_S} s ({first_line(e)}): run "
                             f"`python -m dask worker {address} --nthreads 1 --memory-limit 0` in the repo root "
                             "on each machine") from None  # fmt: skip
        self._check_imports(address)
        self._done = as_completed(loop=self.client.loop)
        self._points: dict[str, tuple[float, int]] = {}
        self._cwd = os.getcwd()
        threads = self.client.nthreads()
        log(f"dask: {len(threads)} worker(s) at {address}, {sum(threads.values())} thread(s)")
        hosts = [a.rsplit(":", 1)[0] for a in threads]
        if any(n > 1 for n in threads.values()) or len(set(hosts)) < len(hosts):
            log("dask: some machine runs more than one point at a time (a worker with more than 1 thread, or two "
                "workers on one host): each trains with every core, and times inference while another trains; "
                "for latency figures that hold, one worker per machine with --nthreads 1")  # fmt: skip

    def _check_imports(self, address: str) -> None:
        """The scheduler unpickles the tasks and the workers run them: both must import this checkout."""
        from importlib.util import find_spec

        found = {
            "the scheduler": self.client.run_on_scheduler(find_spec, "sweep"),
            **self.client.run(find_spec, "sweep"),
        }
        missing = [where for where, spec in found.items() if spec is None]
        if missing:
            self.client.close()
            raise SweepError(f"--scheduler {address}: {', '.join(missing)} cannot import this project: start "
                             "`python -m dask scheduler` and `python -m dask worker ...` from the repo root (or "
                             "with PYTHONPATH=<repo root>)")  # fmt: skip

    @property
    def running(self) -> int:
        return len(self._points)

    def slots(self) -> int:
        """Points to keep in flight: every worker thread busy, and at least one (Dask waits for a worker)."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable, s: SweepSettings, base, alpha: float, size: int, host: str) -> None:
        # The key names the point and its settings: a rerun asks for the same task, so Dask can hand back one
        # still running on a worker from the client it lost, instead of starting a second.
        text = json.dumps([s.to_dict(), base.to_dict(), alpha, size], sort_keys=True, default=str)
        key = f"sweep-{point_name(alpha, size)}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        self._done.add(self.client.submit(_on_worker, fn, s, base, alpha, size, self._cwd, key=key))
        self._points[key] = (alpha, size)

    def next_done(self) -> Done:
        import asyncio

        future = next(self._done)
        alpha, size = self._points.pop(future.key)
        try:
            rows, trained, seconds, worker = future.result()
        except (Exception, asyncio.CancelledError) as e:  # KilledWorker after allowed-failures, a lost scheduler
            log(f"--- {point_name(alpha, size)}: engine: {first_line(e)}")
            return Done(alpha, size, [], False, 0.0, "", error=f"engine: {first_line(e)}")
        return Done(alpha, size, rows, trained, seconds, worker)

    def close(self) -> None:
        if self._points:
            log("dask: points still running on workers go on to their end there; the same command reuses them")
        self.client.close()


def open_engine(s: SweepSettings) -> LocalEngine | DaskEngine:
    """The engine --engine names (settings.resolve has checked that Dask is installed and --scheduler given)."""
    return DaskEngine(s.scheduler) if s.engine == "dask" else LocalEngine()
