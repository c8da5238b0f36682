"""--strategy multiworker: two worker processes on localhost, each with its TF_CONFIG, train one run the way two
machines would (each worker in a folder of its own, as on its own disk; the same --data path and --out on both),
checked against a single-process run of the same settings; and TF_CONFIG's and the cluster's failures."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_settings

# Tiny and quick: every phase costs a graph trace per worker, so phase 3 trains no epoch (its model is still made,
# calibrated, saved and evaluated under the strategy); no augmentation, so both runs converge within 4 epochs.
RECIPE = dict(epochs=4, fine_tune_epochs=1, qat_epochs=0, augment=False)
FLAGS = ["--image-size", "32", "--alpha", "0.35", "--weights", "none", "--batch-size", "16", "--patience", "4",
         "--learning-rate", "3e-3", "--epochs", "4", "--fine-tune-epochs", "1", "--qat-epochs", "0",
         "--no-augment"]  # fmt: skip
OUT = "runs/mw"  # relative: each worker writes under its own working folder, like a machine of its own


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tf_config(addresses: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def _start_workers(tmp_path: Path, args: list[str], n: int = 2) -> list[subprocess.Popen]:
    """n workers of `python -m train --strategy multiworker ARGS`: worker i runs in tmp_path/wI with its own TMPDIR
    tmp_path/tmpI, its output in tmp_path/wI.log. Each worker gets one intra-op thread, like a one-core machine:
    two workers each taking every core of this one were 1.5x slower (275 s against 179 s on 2 cores)."""
    addresses = [f"localhost:{p}" for p in _free_ports(n)]
    procs = []
    for i in range(n):
        (tmp_path / f"w{i}").mkdir(exist_ok=True)
        (tmp_path / f"tmp{i}").mkdir(exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path / f"tmp{i}"), TF_NUM_INTRAOP_THREADS="1",
                   TF_CONFIG=_tf_config(addresses, i))  # fmt: skip
        cmd = [sys.executable, "-m", "train", "--strategy", "multiworker", *args]
        with open(tmp_path / f"w{i}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path / f"w{i}", env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _wait(tmp_path: Path, procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    """(returncode, output) of every worker once all have ended; any still running after timeout is killed."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, (tmp_path / f"w{i}.log").read_text()) for i, p in enumerate(procs)]


def _run_workers(tmp_path: Path, args: list[str], timeout: float = 900) -> list[tuple[int, str]]:
    return _wait(tmp_path, _start_workers(tmp_path, args), timeout)


def _top1(output: str, which: str) -> float:
    return float(re.search(rf"{which} model: test top-1 ([0-9.]+)", output).group(1))


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text()[-3000:]
        time.sleep(0.5)


def _leftover_folders(tmp: Path) -> list[str]:
    """Folders left in a worker's TMPDIR (TensorFlow's autograph leaves .py files there, never folders)."""
    return [p.name for p in tmp.iterdir() if p.is_dir()]


@pytest.mark.slow
def test_two_workers_train_one_run_like_a_single_process(color_folder, tmp_path):
    from train.run import run_training

    t0 = time.monotonic()
    single = run_training(tiny_settings(color_folder, tmp_path / "single", **RECIPE))
    t1 = time.monotonic()
    (chief_rc, chief), (other_rc, other) = _run_workers(tmp_path, ["--data", str(color_folder), "--out", OUT, *FLAGS])
    print(f"single process {t1 - t0:.0f} s, two workers {time.monotonic() - t1:.0f} s")
    assert chief_rc == 0, chief[-3000:]
    assert other_rc == 0, other[-3000:]
    assert "strategy: multiworker, worker 1 of 2 (chief), 2 replica(s) in all" in chief
    assert "worker 2 of 2, 2 replica(s)" in other and "(chief)" not in other.split("strategy:")[1].splitlines()[0]

    run = tmp_path / "w0" / OUT
    for name in ("settings.json", "metrics.json", "model_float.keras", "model_qat.h5", "splits.json", "history.csv"):
        assert (run / name).is_file(), name
    assert (run.parent / "latest").resolve() == run.resolve()
    assert not (run / "backup").exists() and not list(run.rglob("workertemp_*")), sorted(run.rglob("*"))
    # The other worker wrote nothing where its run folder would be, and deleted its temporary folder.
    assert list((tmp_path / "w1").iterdir()) == []
    assert _leftover_folders(tmp_path / "tmp1") == [] and _leftover_folders(tmp_path / "tmp0") == []

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["settings_sha256"] == single["settings_sha256"]  # the very same settings as the reference
    assert metrics["n_images"] == single["n_images"]
    # Every worker holds the same model: the gradients of each step are all-reduced.
    assert _top1(other, "float") == _top1(chief, "float") == metrics["test_top1_float"]
    assert _top1(other, "QAT") == _top1(chief, "QAT") == metrics["test_top1_qat"]
    # Not bit for bit the single-process model: each worker's BatchNorm sees its half of every batch (8 images,
    # not 16) and draws its own dropout. Measured on the 66 test images (2 cores): single process float 0.9848,
    # QAT 0.9848; two workers float 1.0000, QAT 0.9848 (1.0000 and 1.0000 with every thread to each worker): at
    # most 1 image apart. 0.05 is 3 test images: a worker training on the wrong shard, or without the other's
    # gradients, lands far outside it (a model that learned nothing scores 0.33).
    assert abs(metrics["test_top1_float"] - single["test_top1_float"]) <= 0.05, (metrics, single)
    assert abs(metrics["test_top1_qat"] - single["test_top1_qat"]) <= 0.05, (metrics, single)
    assert metrics["test_top1_float"] >= 0.9, metrics

    # The same command again: the chief answers from its complete run, the other worker stops with it.
    (chief_rc, chief), (other_rc, other) = _run_workers(tmp_path, ["--data", str(color_folder), "--out", OUT, *FLAGS])
    assert chief_rc == 0 and "is already complete (same settings)" in chief, chief[-3000:]
    assert other_rc == 0 and "holds this run complete; nothing to train" in other, other[-3000:]
    assert json.loads((run / "metrics.json").read_text()) == metrics and list((tmp_path / "w1").iterdir()) == []


@pytest.mark.slow
def test_a_partial_run_on_the_chief_stops_every_worker_together(color_folder, tmp_path):
    """The chief's folder holds a partial run, the other worker's nothing: both stop at once with the same message,
    before reading any data (a chief resuming alone would leave the other worker waiting at its first step)."""
    from train.settings import resolve, write_run_settings

    partial = tmp_path / "w0" / OUT
    (partial / "checkpoints").mkdir(parents=True)
    write_run_settings(partial, resolve(tiny_settings(color_folder, partial, **RECIPE)), "none")
    (partial / "checkpoints" / "phase1.json").write_text('{"end_epoch": 4}')
    results = _run_workers(tmp_path, ["--data", str(color_folder), "--out", OUT, *FLAGS], timeout=300)
    for rc, out in results:
        assert rc == 2, out[-3000:]
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "the chief (worker 1) found a partial run at --out" in errors[0], out[-3000:]
        assert "pass --force on every worker" in errors[0] and "data:" not in out
    assert sorted(p.name for p in partial.rglob("*")) == ["checkpoints", "phase1.json", "settings.json"]


@pytest.mark.slow
def test_a_worker_lost_mid_run_stops_the_other_with_a_clear_message(color_folder, tmp_path):
    procs = _start_workers(tmp_path, ["--data", str(color_folder), "--out", OUT, *FLAGS, "--epochs", "50"])
    try:
        _wait_for_line(tmp_path / "w0.log", "phase 1 (50 epochs", procs[0], timeout=600)
        procs[1].kill()  # a machine that goes away: no exception, no clean-up
        (rc, out), _ = _wait(tmp_path, procs, timeout=300)
    finally:
        for p in procs:
            p.kill()
    assert rc == 2, out[-3000:]
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert error and "worker 1 of 2 (chief) lost the cluster mid-run" in error[0], out[-3000:]
    assert "pass --force on every worker" in error[0] and "{{" not in error[0] and "Traceback" not in out


@pytest.mark.slow
@pytest.mark.parametrize("index, says", [(1, "worker 2 of 2 could not reach the chief localhost:"),
                                         (0, "worker 1 of 2 (chief): the other workers did not all join")])  # fmt: skip
def test_a_worker_alone_gives_up_with_a_clear_message(tmp_path, index, says):
    """A worker whose chief never starts, or a chief whose other worker never does: TensorFlow would wait an hour
    (the chief deaf to SIGTERM); train gives up after TRAIN_WORKER_TIMEOUT seconds."""
    t0 = time.monotonic()
    (tmp_path / "w").mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), TRAIN_WORKER_TIMEOUT="3",
               TF_CONFIG=_tf_config([f"localhost:{p}" for p in _free_ports(2)], index))  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "train", "--strategy", "multiworker", "--out", "runs/x"],
                       cwd=tmp_path / "w", env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    error = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and says in error[0] and " in 3 s" in error[0] and "start the same command" in error[0]
    assert list((tmp_path / "w").iterdir()) == []
    assert time.monotonic() - t0 < 290


@pytest.mark.parametrize(
    "tf_config, says",
    [
        (None, "--strategy multiworker needs TF_CONFIG set on every worker, e.g. TF_CONFIG="),
        ("{cluster", "TF_CONFIG is not JSON"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "TF_CONFIG has no 'task'"),
        ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}', "not host:port: ['b']"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "task index 2 is not 0..1"),
        ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "ps", "index": 0}}', "jobs ['ps']"),
    ],
)  # fmt: skip
def test_a_missing_or_invalid_tf_config_is_one_line(tmp_path, monkeypatch, capsys, tf_config, says):
    from train.cli import main

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert main(["--strategy", "multiworker", "--out", str(tmp_path / "r")]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error: ") and out.count("\n") == 1 and says in out, out
    assert '"task": {"type": "worker", "index": 0}' in out  # the example to copy
    assert not (tmp_path / "r").exists()


def test_tf_config_places_the_chief_first():
    from train.workers import read_tf_config

    both = {"chief": ["c:1"], "worker": ["a:2", "b:3"]}
    c = read_tf_config({"TF_CONFIG": json.dumps({"cluster": both, "task": {"type": "worker", "index": 1}})})
    assert c.addresses == ("c:1", "a:2", "b:3") and c.position == 2 and c.describe() == "worker 3 of 3"
    c = read_tf_config({"TF_CONFIG": json.dumps({"cluster": both, "task": {"type": "chief", "index": 0}})})
    assert c.is_chief and c.describe() == "worker 1 of 3 (chief)"
