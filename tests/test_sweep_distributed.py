"""python -m sweep --engine dask: a Dask scheduler and two workers on localhost run a tiny 2-point sweep through a
lost worker and a stopped client, then the local engine gives the same rows and pick from the same folders. The
engine's flags and the run folder lock are checked without a cluster.

Timings are measured, never asserted: the checks are on rows, logs, and what was (not) trained again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, write_folder

from sweep import engines, run
from sweep.cli import main
from sweep.rows import point_name
from sweep.settings import SweepError, SweepSettings, resolve


def test_engine_flags_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    assert resolve(SweepSettings(engine="dask", scheduler="tcp://h:8786")).engine == "dask"
    assert resolve(SweepSettings()).engine == "local"  # the default needs nothing more than the sweep did
    with pytest.raises(SweepError, match="--engine dask needs --scheduler tcp://HOST:8786"):
        resolve(SweepSettings(engine="dask"))
    with pytest.raises(SweepError, match="--scheduler tcp://h:8786 is for --engine dask"):
        resolve(SweepSettings(scheduler="tcp://h:8786"))
    with pytest.raises(SweepError, match="--engine 'ray' is not known"):
        resolve(SweepSettings(engine="ray"))
    real = importlib.util.find_spec  # a machine without Dask: one line saying what to install, exit 2
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name))
    assert main(["--engine", "dask", "--scheduler", "tcp://h:8786", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --engine dask needs Dask's distributed package: pip install -r "
                   "requirements/distributed.txt")  # fmt: skip
    assert not (tmp_path / "sweep_settings.json").exists()


def test_a_point_waits_for_the_lock_of_its_run_folder(tmp_path):
    """A point still running elsewhere (a worker whose client was stopped) holds its folder: a second call waits."""
    import fcntl

    s = SweepSettings(out=str(tmp_path))
    calls = []
    lock = tmp_path / ".locks" / "a0.35-s32"
    lock.parent.mkdir()
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: calls.append(engines.run_locked(lambda *a: ([{"a": a[2]}], True), s,
                                                                            None, 0.35, 32, "h")))  # fmt: skip
        t.start()
        t.join(1.0)
        assert t.is_alive() and not calls  # waiting while the folder is held
    t.join(10)
    assert not t.is_alive() and calls[0][:2] == ([{"a": 0.35}], True) and calls[0][2] >= 0


class FakeEngine:
    """An engine with `slots` workers that finishes the latest submitted point first; a0.5-s96 dies every time."""

    name = "fake"

    def __init__(self, slots: int):
        self.n, self.flight, self.order, self.most = slots, [], [], 0

    running = property(lambda self: len(self.flight))

    def slots(self) -> int:
        return self.n

    def submit(self, fn, s, base, alpha, size, host) -> None:
        assert fn is run.run_point
        self.flight.append((alpha, size))
        self.order.append(point_name(alpha, size))
        self.most = max(self.most, len(self.flight))

    def next_done(self) -> engines.Done:
        alpha, size = self.flight.pop()
        if (alpha, size) == (0.5, 96):
            return engines.Done(alpha, size, [], False, 0.0, "", error="engine: KilledWorker: all 4 workers died")
        return engines.Done(alpha, size, [{"point": point_name(alpha, size)}], True, 60.0, f"w{len(self.flight)}")

    def close(self) -> None:
        assert not self.flight


def test_points_go_cheapest_first_every_slot_busy_and_the_time_budget_still_decides(tmp_path, monkeypatch):
    fake = FakeEngine(slots=2)
    monkeypatch.setattr(engines, "open_engine", lambda s: fake)
    s = resolve(SweepSettings(out=str(tmp_path), device="pi4", formats="tflite_fp32", max_minutes=10))
    grid = [(0.35, 96), (0.35, 128), (0.5, 96), (1.0, 224)]  # 11, 20, 18, 300 M MACs: run_sweep sorts by them
    rows, not_run, placed = run._run_grid(s, None, sorted(grid, key=lambda p: run.point_cost(*p)), "host-x")
    # Two in flight at once: a0.35-s96 and a0.5-s96 first; a0.5-s96 dies, a0.35-s128 takes its slot and trains in
    # 60 s for 20 M MACs, which puts a1.0-s224 at 60 / 20 x 300 s = 15 min: past 10, so it is never started.
    assert fake.order == ["a0.35-s96", "a0.5-s96", "a0.35-s128"] and fake.most == 2
    assert not_run == [{"point": "a1.0-s224", "reason": not_run[0]["reason"]}]
    assert "--max-minutes 10 would be exceeded" in not_run[0]["reason"] and "at 15.0 min" in not_run[0]["reason"]
    died = [r for r in rows if r["point"] == "a0.5-s96"]
    assert [(r["format"], r["error"]) for r in died] == [("tflite_fp32", "engine: KilledWorker: all 4 workers died")]
    assert {r["point"] for r in rows} == {"a0.35-s96", "a0.35-s128", "a0.5-s96", "a1.0-s224"}
    assert placed["a0.35-s96"] == {"worker": "w0", "trained": True, "seconds": 60.0}
    assert placed["a0.5-s96"]["trained"] is False and "a1.0-s224" not in placed


class Cluster:
    """A Dask scheduler and named workers on localhost, each a process group of its own, logs in `logs`."""

    def __init__(self, logs: Path):
        self.logs, self.procs, self.started = logs, {}, {}
        self.file = logs / "scheduler.json"

    def _start(self, name: str, *args: str) -> None:
        n = self.started[name] = self.started.get(name, 0) + 1
        with open(self.logs / f"{name}-{n}.log", "w") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=REPO, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def start_scheduler(self) -> str:
        self._start("scheduler", "scheduler", "--scheduler-file", str(self.file), "--host", "127.0.0.1", "--port",
                    "0", "--no-dashboard")  # fmt: skip
        wait_for(self.file.is_file, 60, "the scheduler file")
        return json.loads(self.file.read_text())["address"]

    def start_worker(self, name: str) -> None:
        self._start(name, "worker", "--scheduler-file", str(self.file), "--host", "127.0.0.1", "--name", name,
                    "--nthreads", "1", "--nworkers", "1", "--memory-limit", "0", "--no-dashboard")  # fmt: skip

    def log(self, name: str, n: int | None = None) -> str:
        path = self.logs / f"{name}-{n or self.started[name]}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the nanny and its worker process: a machine that went away
        p.wait(30)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def wait_for(cond, seconds: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + seconds
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {seconds:.0f} s")
        time.sleep(0.1)


def sweep_argv(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--alphas", "0.35", "--sizes", "32,48", "--epochs", "1",
            "--fine-tune-epochs", "0", "--qat-epochs", "0", "--weights", "none", "--batch-size", "16",
            "--formats", "onnx_fp32", "--device", "this", "--runs", "5", "--warmup", "1", "--no-plots"]  # fmt: skip


@pytest.mark.slow
def test_two_workers_a_lost_worker_and_a_stopped_client(tmp_path):
    data, out, logs = write_folder(tmp_path / "data", n_per_class=40), tmp_path / "sweep", tmp_path / "logs"
    logs.mkdir()
    s32, s48 = out / "a0.35-s32", out / "a0.35-s48"
    cluster, client = Cluster(logs), None
    try:
        address = cluster.start_scheduler()
        cluster.start_worker("w0")
        argv = [sys.executable, "-m", "sweep", *sweep_argv(data, out), "--engine", "dask", "--scheduler", address]
        with open(logs / "client-1.log", "w") as client_log:
            client = subprocess.Popen(argv, cwd=REPO, stdout=client_log, stderr=subprocess.STDOUT)
        # One worker, so one point at a time, cheapest first. When a0.35-s48 is half way (its phase 1 done),
        # its worker goes away; Dask gives the point to the worker that joins next, which resumes it.
        wait_for(lambda: (s48 / "checkpoints" / "phase1.json").is_file(), 600, "a0.35-s48 phase 1", client)
        cluster.kill("w0")
        phase1 = (s48 / "checkpoints" / "phase1.json").stat().st_mtime_ns
        first_done = (s32 / "metrics.json").stat().st_mtime_ns
        assert not (s48 / "metrics.json").exists()
        cluster.start_worker("w1")
        wait_for(lambda: "phase1: already done" in cluster.log("w1"), 300, "a0.35-s48 resumed on w1", client)
        client.send_signal(signal.SIGINT)  # Ctrl-C on the client while w1 runs the rest of a0.35-s48
        assert client.wait(60) == 130
        first_log = (logs / "client-1.log").read_text()
        assert "--- a0.35-s32: done on w0" in first_log and "a0.35-s48: done" not in first_log
        assert "--- a0.35-s32: training" in cluster.log("w0", 1) and "--- a0.35-s48: training" in cluster.log("w1")

        # The same command again, on both workers: the finished point is not trained again, the other completes.
        cluster.start_worker("w0")
        t = time.monotonic()
        with open(logs / "client-2.log", "w") as client_log:
            again = subprocess.run(argv, cwd=REPO, stdout=client_log, stderr=subprocess.STDOUT, timeout=600)
        seconds = time.monotonic() - t
        second_log = (logs / "client-2.log").read_text()
        assert again.returncode == 0, second_log[-3000:]
        assert "a0.35-s32: done on" in second_log and "a0.35-s48: done on" in second_log
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        cluster.stop()
    assert (s32 / "metrics.json").stat().st_mtime_ns == first_done
    assert (s48 / "checkpoints" / "phase1.json").stat().st_mtime_ns == phase1  # resumed, phase 1 not redone
    placed = json.loads((out / "sweep_engine.json").read_text())
    assert placed["engine"] == "dask" and placed["points"]["a0.35-s32"]["trained"] is False
    assert {p["worker"].split(" (")[0] for p in placed["points"].values()} <= {"w0", "w1"}
    dask_doc = json.loads((out / "sweep.json").read_text())
    assert [(r["point"], r["format"], r["error"]) for r in dask_doc["rows"]] == [
        ("a0.35-s32", "onnx_fp32", ""), ("a0.35-s48", "onnx_fp32", "")]  # fmt: skip
    assert all(r["top1"] is not None and r["latency_ms_device"] > 0 for r in dask_doc["rows"])

    # The local engine on the same finished folders: the same rows and the same pick, nothing trained.
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in (s32, s48)}
    t = time.monotonic()
    assert main(sweep_argv(data, out)) == 0
    print(f"dask rerun {seconds:.0f} s, local rerun {time.monotonic() - t:.0f} s")
    local_doc = json.loads((out / "sweep.json").read_text())
    assert local_doc["rows"] == dask_doc["rows"] and local_doc["pick"] == dask_doc["pick"] is not None
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in (s32, s48)} == stamps
    assert json.loads((out / "sweep_engine.json").read_text())["points"]["a0.35-s48"]["worker"] == "local"
