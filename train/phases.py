"""The training phases: what they share (FitContext), what each one is (Phase), and fit_phase(), which compiles
and fits one of them, resumably.

A phase's end state is saved and then marked done (checkpoints/PHASE.json), so a finished phase is reloaded, not
trained again; BackupAndRestore saves every epoch, so a phase interrupted half way resumes from its last epoch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.atomic import write_json
from contracts.console import log
from train.cache import CachePlan, cache_folder, plan_cache, reset_cache_folder
from train.data import Dataset
from train.settings import TrainSettings


@dataclass(frozen=True)
class Phase:
    """One fit of the model: its name, learning rate and length."""

    name: str  # "phase1" (head), "phase2" (fine-tuning), "phase3" (QAT): names its checkpoints and logs
    lr: float  # Adam learning rate (the peak, after any warm-up)
    epochs: int  # at most this many epochs (EarlyStopping may end it sooner)
    initial_epoch: int  # epochs run before it: the epoch count runs on across phases
    warmup_steps: int = 0  # > 0: the rate ramps up over that many steps (train.schedule.WarmUp)


@dataclass(frozen=True)
class FitContext:
    """What every phase of a run shares: where it writes, how it is distributed, and its data."""

    run: Path  # the run folder: checkpoints/, logs/ and backup/ go in it
    strategy: object  # the tf.distribute strategy the model was built under
    train: object  # tf.data.Dataset of (float32 0-255 RGB batch, labels), shuffled each epoch
    val: object  # the same, in order
    test: object
    class_weight: dict | None  # balanced weights for imbalanced classes, else None
    patience: int  # EarlyStopping patience in epochs
    steps_per_epoch: int  # batches in one training epoch
    cache: CachePlan | None = None  # where decoded images wait between epochs (train.cache)
    n_train: int = 0  # images in the training split, and the batch size: what images/s counts
    batch_size: int = 32

    def open_cache(self) -> None:
        """Clears an interrupted run's cache and makes RUN/cache/ for the file mode: once the run folder exists
        (train.run calls it after writing settings.json, which must come first in a new run folder)."""
        if self.cache is not None:
            reset_cache_folder(self.run, self.cache)

    def warmup_steps(self, epochs: int) -> int:
        """Steps to ramp a continuing phase's fresh optimizer up over: 10% of the phase, at most an epoch.

        A whole epoch of warm-up cost a short schedule's underfit model 3 test images in 270.
        """
        return max(1, min(self.steps_per_epoch, round(0.1 * epochs * self.steps_per_epoch)))


def make_strategy(s: TrainSettings):
    """The tf.distribute strategy --strategy asks for (--logical-cpus splits the CPU first, to test "mirrored")."""
    import tensorflow as tf

    if s.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * s.logical_cpus)
    if s.strategy == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or (
            [d.name for d in tf.config.list_logical_devices("CPU")] if s.logical_cpus > 1 else None
        )
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif s.strategy == "multiworker":  # made by train.workers.run_on_workers before anything else, and logged there
        from train.workers import connect, read_tf_config

        return connect(read_tf_config())
    else:
        return tf.distribute.get_strategy()
    log(f"strategy: {s.strategy}, {strategy.num_replicas_in_sync} replica(s)")
    return strategy


def class_weight(labels: np.ndarray, n: int) -> dict | None:
    """Balanced class weights when the largest class is over 1.5x the smallest, else None."""
    counts = np.bincount(labels, minlength=n)
    if counts.max() <= 1.5 * counts.min():
        return None
    from sklearn.utils.class_weight import compute_class_weight

    w = compute_class_weight("balanced", classes=np.arange(n), y=labels)
    log(f"classes are imbalanced ({counts.min()}..{counts.max()} images): using balanced class weights")
    return {i: float(x) for i, x in enumerate(w)}


def make_context(s: TrainSettings, ds: Dataset) -> FitContext:
    """The strategy, the seeded tf.data pipelines of the three splits, their cache and the class weights of one run.

    The pipelines' file cache (if the plan chose it) is written only once ctx.open_cache() has made its folder.
    """
    strategy = make_strategy(s)
    import tensorflow as tf

    from train.pipeline import make_dataset

    tf.keras.utils.set_random_seed(s.seed)
    sp = ds.splits
    plan = plan_cache(sum(len(v) for v in sp.values()), s.image_size, s.cache_budget_gb, s.run_dir, s.cache,
                      in_memory=sp["train"].images is not None)  # fmt: skip
    log(plan.line())
    folder = cache_folder(s.run_dir)
    from train.workers import shard_by_data  # the global batch and the sharding, explained there

    shard = shard_by_data if s.strategy == "multiworker" else (lambda d: d)

    def pipeline(name: str, training: bool):
        return shard(make_dataset(sp[name], s.image_size, s.batch_size, training, s.seed if training else 0, plan,
                                  folder / name))  # fmt: skip

    train = pipeline("train", True)
    n = int(train.cardinality())
    return FitContext(
        run=s.run_dir, strategy=strategy, train=train, val=pipeline("val", False), test=pipeline("test", False),
        class_weight=class_weight(sp["train"].labels, len(ds.class_names)), patience=s.patience,
        steps_per_epoch=n if n > 0 else 100,  # unknown cardinality: a typical epoch's worth
        cache=plan, n_train=len(sp["train"]), batch_size=s.batch_size,
    )  # fmt: skip


def callbacks(run: Path, phase: str) -> list:
    """Per-epoch backup (resume), the best weights by val_loss, and the CSV log of one phase."""
    import tf_keras as keras

    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "logs").mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(str(run / "backup" / phase), delete_checkpoint=True),
        keras.callbacks.ModelCheckpoint(
            str(run / "checkpoints" / f"{phase}.best"),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        ),  # fmt: skip
        keras.callbacks.CSVLogger(str(run / "logs" / f"{phase}.csv"), append=True),
    ]


def fit_phase(*, model, phase: Phase, ctx: FitContext) -> int:
    """Compiles and fits one phase, ending on its best epoch by val_loss; a finished phase is reloaded instead.

    Returns:
        The epoch count at the phase's end (the next phase's initial_epoch).
    """
    import tf_keras as keras

    from train.schedule import WarmUp
    from train.throughput import Throughput, describe

    # TensorFlow checkpoints, not HDF5: tf-keras cannot load .h5 weights under MirroredStrategy.
    # The phase's .json marker is written after its final weights, so it is the commit point.
    final = ctx.run / "checkpoints" / f"{phase.name}.final"
    state_path = ctx.run / "checkpoints" / f"{phase.name}.json"
    if state_path.is_file():
        model.load_weights(str(final)).expect_partial()
        end = json.loads(state_path.read_text())["end_epoch"]
        log(f"{phase.name}: already done ({end - phase.initial_epoch} epochs), weights reloaded")
        return end
    with ctx.strategy.scope():
        rate = WarmUp(phase.lr, phase.warmup_steps) if phase.warmup_steps > 0 else phase.lr
        model.compile(
            optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    meter = Throughput(ctx.n_train, ctx.batch_size)
    cbs = callbacks(ctx.run, phase.name) + [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=ctx.patience, restore_best_weights=True),
        meter,
    ]
    hist = model.fit(
        ctx.train, validation_data=ctx.val, epochs=phase.initial_epoch + phase.epochs,
        initial_epoch=phase.initial_epoch, class_weight=ctx.class_weight, callbacks=cbs,
        verbose=1 if sys.stdout.isatty() else 2,
    )  # fmt: skip
    best = ctx.run / "checkpoints" / f"{phase.name}.best"
    if Path(f"{best}.index").is_file():  # the best epoch by val_loss, whether or not EarlyStopping fired
        model.load_weights(str(best)).expect_partial()
    end = phase.initial_epoch + len(hist.epoch)
    model.save_weights(str(final))
    figures = meter.report()
    log(describe(phase.name, figures))
    write_json(state_path, {"end_epoch": end, "throughput": figures})
    return end
