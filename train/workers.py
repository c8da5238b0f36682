"""--strategy multiworker: one run trained by several processes or machines (tf.distribute.MultiWorkerMirroredStrategy).

TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \
    python -m train --strategy multiworker --data /same/path/on/every/machine --out runs/NAME

Every worker runs the same command (its own TF_CONFIG index) and the same steps; the gradients of each step are
all-reduced, so every worker holds the same model. The chief (index 0) writes the run folder. Every other worker
writes what Keras and each step need (checkpoints, which all workers must save together, the BackupAndRestore
backup, the models, plots) into a temporary folder of its own, deleted at the end: the Keras multi-worker guide's
write_filepath pattern, for the whole run folder rather than file by file. A multi-worker run does not resume a
partial run (the other workers' state was in their temporary folders): every worker learns what the chief found
at --out before training, and if it is a partial run they all stop with one message (pass --force on every worker).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from contracts.console import first_line, log
from train.runfolder import RunError, check_out_folder, has_progress, previous_run
from train.settings import SettingsError, TrainSettings

# tf.distribute has no public timeout for reaching the other workers: left alone, the chief waits an hour for the
# others to register (measured: still waiting after 240 s, deaf to SIGTERM), and a watchdog thread cannot end that
# wait (it never ran while TensorFlow waited). So every worker sets the coordination service's register timeout
# through TF's private eager context (_bound_registration), and a worker other than the chief first waits for the
# chief's port itself: each for at most this many seconds (TRAIN_WORKER_TIMEOUT overrides it). Start every worker
# within that time of the first.
CONNECT_TIMEOUT_S = 300
EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
           '"index": 0}}\' (index 1 on host2)')  # fmt: skip
_FRESH, _PARTIAL, _COMPLETE, _REFUSED = range(4)
_STRATEGY = None  # TensorFlow allows one MultiWorkerMirroredStrategy per process: made once, then reused


@dataclass(frozen=True)
class Cluster:
    """This process's place in TF_CONFIG's cluster."""

    addresses: tuple[str, ...]  # every worker's host:port, the chief first
    position: int  # this worker's index in addresses (0: the chief, which writes the run folder)

    @property
    def is_chief(self) -> bool:
        return self.position == 0

    def describe(self) -> str:
        return f"worker {self.position + 1} of {len(self.addresses)}{' (chief)' if self.is_chief else ''}"


def read_tf_config(env: dict | None = None) -> Cluster:
    """TF_CONFIG checked as tf.distribute reads it: jobs "chief" (at most one) and "worker", and this task.

    Raises:
        SettingsError: TF_CONFIG is missing, not JSON, or names no workers or a task outside the cluster.
    """
    raw = (os.environ if env is None else env).get("TF_CONFIG", "").strip()
    if not raw:
        raise SettingsError(f"--strategy multiworker needs TF_CONFIG set on every worker, e.g. {EXAMPLE}")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise SettingsError(f"TF_CONFIG is not JSON ({first_line(e)}): set it like {EXAMPLE}") from None
    try:
        cluster, task = doc["cluster"], doc["task"]
        chief, workers = cluster.get("chief", []), cluster.get("worker", [])
        kind, index = task["type"], task["index"]
    except (KeyError, TypeError, AttributeError) as e:
        what = f"has no {e}" if isinstance(e, KeyError) else "is not an object with a cluster and a task"
        raise SettingsError(f"TF_CONFIG {what}: set it like {EXAMPLE}") from None
    why = _problem(sorted(set(cluster) - {"chief", "worker"}), chief, workers, kind, index)
    if why:
        raise SettingsError(f"TF_CONFIG {why}: set it like {EXAMPLE}")
    return Cluster(addresses=tuple(chief + workers), position=index + (len(chief) if kind == "worker" else 0))


def _problem(other_jobs: list, chief: list, workers: list, kind, index) -> str:
    """What is wrong with TF_CONFIG's cluster and task, or "" when nothing is."""
    if not isinstance(chief, list) or not isinstance(workers, list):
        return "cluster jobs are not lists of host:port"
    addresses, jobs = chief + workers, {"chief": chief, "worker": workers}
    if other_jobs:
        return f"has jobs {other_jobs}: only chief and worker train"
    if not addresses:
        return "lists no workers"
    if len(chief) > 1:
        return f"has {len(chief)} chiefs: at most one"
    if bad := [a for a in addresses if not isinstance(a, str) or not a.rpartition(":")[2].isdigit()]:
        return f"has addresses that are not host:port: {bad}"
    if twice := sorted({a for a in addresses if addresses.count(a) > 1}):
        return f"lists {twice[0]} twice"
    if kind not in jobs or not jobs[kind]:
        return f"task type {kind!r} is not a job of its cluster"
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(jobs[kind]):
        return f"task index {index!r} is not 0..{len(jobs[kind]) - 1}"
    return ""


def connect(cluster: Cluster):
    """The MultiWorkerMirroredStrategy, once every worker of the cluster has joined (made once per process).

    Raises:
        RunError: the chief's port did not open in time (CONNECT_TIMEOUT_S), or the cluster did not form.
    """
    global _STRATEGY
    if _STRATEGY is not None:
        return _STRATEGY
    others = ", ".join(a for i, a in enumerate(cluster.addresses) if i != cluster.position) or "none"
    fix = f"start the same command, each with its own TF_CONFIG index, on every worker ({others}) and check the ports"
    try:
        timeout = float(os.environ.get("TRAIN_WORKER_TIMEOUT") or CONNECT_TIMEOUT_S)
    except ValueError:
        raise SettingsError("TRAIN_WORKER_TIMEOUT is not a number of seconds: set it like 300, or unset it") from None
    log(f"{cluster.describe()}: waiting for the other workers ({others})")
    if not cluster.is_chief and not _wait_for_port(cluster.addresses[0], timeout):
        raise RunError(f"{cluster.describe()} could not reach the chief {cluster.addresses[0]} in {timeout:g} s: {fix}")
    import tensorflow as tf

    _bound_registration(timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.OpError as e:
        why = first_line(e)[:160]  # the chief's "... tasks did not connect" when the others did not join in time
        raise RunError(f"{cluster.describe()}: the other workers did not all join in {timeout:g} s ({why}...): "
                       f"{fix}") from None  # fmt: skip
    log(f"strategy: multiworker, {cluster.describe()}, {strategy.num_replicas_in_sync} replica(s) in all")
    _STRATEGY = strategy
    return strategy


def _bound_registration(timeout: float) -> None:
    """The coordination service MultiWorkerMirroredStrategy configures, as it does (its own call, read in TF 2.21's
    collective_all_reduce_strategy.py), plus a register timeout: the strategy keeps a service already configured."""
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver
        from tensorflow.python.eager import context
    except ImportError as e:  # a TensorFlow that moved them: TF's own wait, said
        log(f"warning: no register timeout for the workers ({first_line(e)}): a missing worker is waited for")
        return
    spec = TFConfigClusterResolver().cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=j, num_tasks=spec.num_tasks(j)) for j in ("chief", "worker")
            if j in spec.jobs]  # fmt: skip
    ctx = context.context()
    ctx.configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs, cluster_register_timeout_in_ms=max(1, int(timeout * 1000)),
    )  # fmt: skip
    # The timeout binds only with registration as a barrier (measured: without it, the chief alone still waited
    # after 240 s; with it, DeadlineExceededError after the timeout). The call above has no argument for it.
    ctx._coordination_service_config.cluster_register_with_barrier = True


def _wait_for_port(address: str, timeout: float) -> bool:
    """Whether host:port accepts a TCP connection within timeout seconds (the chief's server is up)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(1)


def shard_by_data(ds):
    """The dataset as every worker must read it: DATA auto-sharding, set deliberately.

    The pipeline's batch is the global batch (--batch-size): tf.distribute splits each batch between the workers
    and all-reduces the gradients, so a step sees as many images as a single-process step (same learning rate,
    same steps per epoch, comparable results). DATA sharding keeps each worker's share of every batch from the
    same seeded pipeline (the same shuffle order on every worker), because the input is one list of files or one
    array, not a file per worker (FILE sharding, AUTO's first choice, would fall back to DATA with a warning). Its
    cost: every worker decodes every image.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _folder_state(s: TrainSettings, force: bool, chief: bool) -> tuple[int, RunError | None]:
    """What the chief finds at --out: fresh, partial (phases or a backup from an earlier run), complete, refused.

    Only the chief's folder counts: the other workers never write there (on a shared disk they see the chief's).
    """
    if not chief:
        return _FRESH, None
    try:
        check_out_folder(s, force)
        if previous_run(s, force):
            return _COMPLETE, None
    except RunError as e:
        return _REFUSED, e
    run = s.run_dir
    partial = not force and has_progress(run)
    return (_PARTIAL if partial else _FRESH), None


def _chief_state(strategy, state: int) -> int:
    """The chief's state, learnt by every worker: a collective gather, so also a barrier every worker must reach."""
    import tensorflow as tf

    mine = tf.constant([state], tf.int32)
    per_replica = strategy.gather(strategy.experimental_distribute_values_from_function(lambda _: mine), axis=0)
    return int(per_replica.numpy()[0])  # replicas come worker by worker, the chief's first


def _agree(strategy, cluster: Cluster, s: TrainSettings, state: int, refused: RunError | None) -> int:
    """Every worker learns what the chief found at --out; they all train, or all stop with one message.

    Returns:
        The chief's state: _FRESH (train) or _COMPLETE (the chief answers from the run folder).

    Raises:
        RunError: on every worker alike, so none is left waiting for the others at its first step.
    """
    chief = _chief_state(strategy, state)
    if chief in (_FRESH, _COMPLETE):
        return chief
    if refused is not None:
        raise refused
    if chief == _REFUSED:
        raise RunError(f"the chief ({cluster.addresses[0]}) refused --out {s.run_dir}, and its error says why: fix "
                       "that, then start every worker again")  # fmt: skip
    raise RunError(f"the chief (worker 1) found a partial run at --out {s.run_dir}, and a multi-worker run does not "
                   "resume (the other workers' progress was in temporary folders): pass --force on every worker "
                   "to train it from the start")  # fmt: skip


def run_on_workers(s: TrainSettings, force: bool, train) -> dict:
    """train(settings, force) on this worker of TF_CONFIG's cluster, writing --out only on the chief.

    Returns:
        The run's metrics (every worker has the same; a worker other than the chief returns {} when the chief's
        --out already holds the run complete and it cannot read that folder itself).

    Raises:
        SettingsError: TF_CONFIG is missing or invalid. RunError: see connect() and _agree().
    """
    cluster = read_tf_config()
    strategy = connect(cluster)
    import tensorflow as tf

    scratch = None
    try:
        state, refused = _folder_state(s, force, cluster.is_chief)
        if _agree(strategy, cluster, s, state, refused) == _COMPLETE:  # every worker stops, no barrier needed
            if cluster.is_chief:
                return train(s, force)  # answers from the run folder
            log(f"{cluster.describe()}: the chief's {s.run_dir} holds this run complete; nothing to train")
            done = s.run_dir / "metrics.json"  # there too when --out is on a disk the workers share
            return json.loads(done.read_text()) if done.is_file() else {}
        if cluster.is_chief:
            metrics = train(s, force)
        else:
            scratch = Path(tempfile.mkdtemp(prefix=f"train-worker{cluster.position + 1}-"))
            log(f"{cluster.describe()}: the chief writes {s.run_dir}; this worker writes to {scratch}, deleted at "
                "the end")  # fmt: skip
            # A folder inside the scratch one, so that the runs/latest link lands in scratch too.
            metrics = train(dataclasses.replace(s, out=str(scratch / "run")), force)
        # The last barrier: no worker leaves (taking its part of the cluster with it) while another still works.
        _chief_state(strategy, _COMPLETE)
        return metrics
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as e:
        # A worker that stops (crash, kill, lost network) aborts the others' collectives.
        raise RunError(f"{cluster.describe()} lost the cluster mid-run ({_why_lost(e)}): pass --force on every "
                       "worker to train the run again from the start") from None  # fmt: skip
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _why_lost(e: Exception) -> str:
    """TensorFlow's reason in one line, e.g. "Collective ops is aborted by: Error reported from /job:worker/task:1:
    The following tasks are unhealthy (stopped sending heartbeats): /job:worker/replica:0/task:1"."""
    lines = [x.strip() for x in re.sub(r"\{\{[^}]*\}\}", "", str(e)).splitlines() if x.strip()] or [repr(e)]
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
