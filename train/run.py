"""run_training(): the three phases, resumable, with every output written atomically into runs/NAME/.

Phase 1 trains a new head on the frozen backbone, phase 2 fine-tunes the top of the backbone at a lower
learning rate, phase 3 is quantization-aware training. Each phase's end state is saved, and
BackupAndRestore saves every epoch, so re-running the same command after Ctrl-C or a kill resumes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from contracts.atomic import atomic_path, write_json, write_text
from train.data import load_dataset, save_splits
from train.runfolder import FLOAT_MODEL, QAT_MODEL, RunError, check_out_folder, link_latest, previous_run, replace_run
from train.settings import TrainSettings, resolve

__all__ = ["FLOAT_MODEL", "QAT_MODEL", "RunError", "run_training"]


def _log(msg: str) -> None:
    print(msg, flush=True)


def make_strategy(s: TrainSettings):
    import tensorflow as tf

    if s.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * s.logical_cpus)
    if s.strategy == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or (
            [d.name for d in tf.config.list_logical_devices("CPU")] if s.logical_cpus > 1 else None
        )
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif s.strategy == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        return tf.distribute.get_strategy()
    _log(f"strategy: {s.strategy}, {strategy.num_replicas_in_sync} replica(s)")
    return strategy


def _callbacks(run: Path, phase: str):
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


def _fit_phase(
    model,
    run,
    phase,
    s,
    train_ds,
    val_ds,
    lr,
    epochs,
    initial_epoch,
    class_weight,
    strategy,
    patience,
    warmup_steps: int = 0,
):
    """Compiles and fits one phase; returns the number of epochs it ended at. Skips a finished phase.

    warmup_steps > 0 ramps the learning rate up over that many steps (train.schedule.WarmUp).
    """
    import tf_keras as keras

    from train.schedule import WarmUp

    # TensorFlow checkpoints, not HDF5: tf-keras cannot load .h5 weights under MirroredStrategy.
    # The phase's .json marker is written after its final weights, so it is the commit point.
    final = run / "checkpoints" / f"{phase}.final"
    state_path = run / "checkpoints" / f"{phase}.json"
    if state_path.is_file():
        model.load_weights(str(final)).expect_partial()
        end = json.loads(state_path.read_text())["end_epoch"]
        _log(f"{phase}: already done ({end - initial_epoch} epochs), weights reloaded")
        return end
    with strategy.scope():
        rate = WarmUp(lr, warmup_steps) if warmup_steps > 0 else lr
        model.compile(
            optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    cbs = _callbacks(run, phase) + [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    ]
    hist = model.fit(
        train_ds, validation_data=val_ds, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
        class_weight=class_weight, callbacks=cbs, verbose=1 if sys.stdout.isatty() else 2,
    )  # fmt: skip
    best = run / "checkpoints" / f"{phase}.best"
    if Path(f"{best}.index").is_file():  # the best epoch by val_loss, whether or not EarlyStopping fired
        model.load_weights(str(best)).expect_partial()
    end = initial_epoch + len(hist.epoch)
    model.save_weights(str(final))
    write_json(state_path, {"end_epoch": end})
    return end


def _history(run: Path) -> list[dict]:
    from train.report import read_history

    rows = []
    for phase in ("phase1", "phase2", "phase3"):
        by_epoch = {r["epoch"]: r for r in read_history(run / "logs" / f"{phase}.csv")}  # a resumed epoch: last wins
        rows += [dict(r, phase=phase) for _, r in sorted(by_epoch.items(), key=lambda kv: int(kv[0]))]
    return rows


def _write_history(rows: list[dict], path: Path) -> None:
    import csv
    import io

    keys = ["phase", "epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def _class_weight(labels: np.ndarray, n: int) -> dict | None:
    """Balanced class weights when the largest class is over 1.5x the smallest."""
    counts = np.bincount(labels, minlength=n)
    if counts.max() <= 1.5 * counts.min():
        return None
    from sklearn.utils.class_weight import compute_class_weight

    w = compute_class_weight("balanced", classes=np.arange(n), y=labels)
    _log(f"classes are imbalanced ({counts.min()}..{counts.max()} images): using balanced class weights")
    return {i: float(x) for i, x in enumerate(w)}


def _steps_per_epoch(ds) -> int:
    n = int(ds.cardinality())
    return n if n > 0 else 100  # unknown cardinality: a typical epoch's worth


def _calibrate_qat(qat, float_model, train_split, val_ds, s: TrainSettings, n_images: int = 256) -> dict:
    """Sets the fresh QAT model's ranges from the float model; returns how close it starts (on the val split)."""
    from train.data import Split, split_images
    from train.qat import calibrate_ranges

    val_x = np.concatenate([x.numpy() for x, _ in val_ds]).astype(np.float32)
    val_y = np.concatenate([y.numpy() for _, y in val_ds])
    float_pred = float_model.predict(val_x, batch_size=64, verbose=0).argmax(1)  # once, for before and after
    before = float(np.mean(qat.predict(val_x, batch_size=64, verbose=0).argmax(1) == float_pred))
    pick = np.random.default_rng(s.seed).permutation(len(train_split))[:n_images]
    sp = train_split
    subset = Split(labels=sp.labels[pick], images=None if sp.images is None else sp.images[pick],
                   paths=None if sp.paths is None else [sp.paths[i] for i in pick])  # fmt: skip
    n = calibrate_ranges(qat, float_model, split_images(subset, s.image_size), batch_size=s.batch_size)
    pred = qat.predict(val_x, batch_size=64, verbose=0).argmax(1)
    after, top1 = float(np.mean(pred == float_pred)), float(np.mean(pred == val_y))
    _log(f"QAT start: {n} quantizer ranges calibrated on {len(pick)} training images; agreement with the float "
         f"model on val {before:.3f} -> {after:.3f}, val top-1 {top1:.4f}")  # fmt: skip
    return {"agreement": round(after, 4), "agreement_uncalibrated": round(before, 4), "val_top1": round(top1, 4)}


def _first_epoch_accuracy(rows: list[dict]) -> dict:
    """Training accuracy of each phase's last and first epochs, and the drop where one phase hands over."""
    out = {}
    for prev, phase in (("phase1", "phase2"), ("phase2", "phase3")):
        a = [float(r["accuracy"]) for r in rows if r["phase"] == prev]
        b = [float(r["accuracy"]) for r in rows if r["phase"] == phase]
        if a and b:
            out[phase] = {"previous_last": round(a[-1], 4), "first": round(b[0], 4),
                          "drop_points": round((a[-1] - b[0]) * 100, 2)}  # fmt: skip
    return out


def run_training(settings: TrainSettings, force: bool = False) -> dict:
    """Trains a run end to end and returns its metrics (see README, "Outputs of make train").

    Ctrl-C at any point ends with the resume message and SystemExit(130).

    Raises:
        RunError: the run folder holds a run with other settings.
        train.data.DataError: the dataset is unusable (message names the folder and the fix).
    """
    s = resolve(settings)
    interrupted = _Interrupts()
    try:
        with interrupted:
            return _train(s, force)
    except KeyboardInterrupt:
        pass
    except Exception:
        if not interrupted.seen:
            raise
        # TensorFlow turns a Ctrl-C inside its own code into other errors ("Concurrent access?"): still a Ctrl-C
    _log(f"\ninterrupted: re-run the same command to resume {s.run_dir} from its last finished epoch")
    raise SystemExit(130) from None


class _Interrupts:
    """Notes that SIGINT arrived (then raises KeyboardInterrupt as Python does), in the main thread only."""

    def __init__(self):
        self.seen = False
        self._previous = None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _train(s: TrainSettings, force: bool) -> dict:
    run = s.run_dir
    check_out_folder(s, force)
    if previous_run(s, force):
        _log(f"{run} is already complete (same settings); pass --force to train again")
        link_latest(run, _log)
        return json.loads((run / "metrics.json").read_text())
    if s.weights not in ("imagenet", "none"):  # a bad file is found before any data is read
        from train.weights import check_weights_file

        _log(f"weights: {s.weights}: {check_weights_file(s.weights, s.backbone, s.alpha)}")
    t0 = time.time()
    # The data is read before anything is written or deleted: a bad --data leaves the folder as it was.
    ds = load_dataset(s.data, s.image_size, s.val_split, s.test_split, s.seed, s.cache_dir)
    if force:
        replace_run(run)
    run.mkdir(parents=True, exist_ok=True)
    settings_doc = dict(s.to_dict(), settings_sha256=s.sha256())
    write_json(run / "settings.json", settings_doc)
    names = ds.class_names
    sizes = {k: len(v) for k, v in ds.splits.items()}
    _log(f"data: {ds.source}, {len(names)} classes, train/val/test = {sizes['train']}/{sizes['val']}/{sizes['test']}")
    write_text(run / "labels.txt", "\n".join(names) + "\n")
    save_splits(ds, run / "splits.json")
    if ds.skipped:
        write_text(run / "skipped.txt", "".join(f"{p}\t{why}\n" for p, why in ds.skipped))
        _log(f"{len(ds.skipped)} unreadable file(s) skipped, listed in {run / 'skipped.txt'}")

    strategy = make_strategy(s)
    import tensorflow as tf

    from train.model import WeightsUnavailable, build_model, set_trainable
    from train.pipeline import make_dataset
    from train.qat import load_qat_model, quantize_model, save_qat_model
    from train.report import classification_metrics, plot_confusion, plot_learning_curves, plot_samples

    tf.keras.utils.set_random_seed(s.seed)
    train_ds = make_dataset(ds.splits["train"], s.image_size, s.batch_size, True, s.seed)
    val_ds = make_dataset(ds.splits["val"], s.image_size, s.batch_size, False)
    test_ds = make_dataset(ds.splits["test"], s.image_size, s.batch_size, False)
    class_weight = _class_weight(ds.splits["train"].labels, len(names))

    kw = dict(num_classes=len(names), image_size=s.image_size, backbone=s.backbone, alpha=s.alpha,
              dropout=s.dropout, augment=s.augment, flip=s.flip, bn_momentum=s.bn_momentum)  # fmt: skip
    weights_used = s.weights
    with strategy.scope():
        try:
            model = build_model(weights=s.weights, **kw)
        except WeightsUnavailable as e:
            bar = "!" * 78
            _log(f"{bar}\nWARNING: ImageNet weights could not be downloaded ({e}).\n"
                 "Training goes on from RANDOM INIT: there is no transfer learning in this run, and the whole\n"
                 f"network trains. Pass --weights PATH.h5 to use a local copy.\n{bar}")  # fmt: skip
            weights_used = "none"
            model = build_model(weights="none", **kw)
    pretrained = weights_used != "none"
    settings_doc["weights_used"] = weights_used
    write_json(run / "settings.json", settings_doc)
    if not pretrained:
        _log("no pretrained weights: nothing to transfer, so phases 1 and 2 train the whole network")

    lr2 = s.learning_rate * s.fine_tune_lr_factor
    # Phases 2 and 3 continue a trained model with a fresh optimizer: ramp up over the first 10% of the phase, at
    # most an epoch (train.schedule). A whole epoch cost a short schedule's underfit model 3 test images in 270.
    spe = _steps_per_epoch(train_ds)

    def warmup(epochs: int) -> int:
        return max(1, min(spe, round(0.1 * epochs * spe)))

    _log(
        f"phase 1 ({s.epochs} epochs, lr {s.learning_rate:g}): "
        + set_trainable(model, "head", s.backbone, pretrained=pretrained)
    )
    end1 = _fit_phase(
        model, run, "phase1", s, train_ds, val_ds, s.learning_rate, s.epochs, 0, class_weight, strategy, s.patience
    )
    _log(
        f"phase 2 ({s.fine_tune_epochs} epochs, lr {lr2:g}): "
        + set_trainable(model, "fine_tune", s.backbone, s.fine_tune_from, pretrained)
    )
    end2 = _fit_phase(model, run, "phase2", s, train_ds, val_ds, lr2, s.fine_tune_epochs, end1, class_weight,
                      strategy, s.patience, warmup(s.fine_tune_epochs))  # fmt: skip
    with atomic_path(run / FLOAT_MODEL) as tmp:
        model.save(str(tmp))
    test_images = np.concatenate([x.numpy() for x, _ in test_ds]).astype(np.uint8)
    y_test = ds.splits["test"].labels
    float_probs = model.predict(test_ds, verbose=0)
    float_m = classification_metrics(y_test, float_probs, names)
    _log(f"float model: test top-1 {float_m['top1']:.4f}")

    _log(f"phase 3, quantization-aware training ({s.qat_epochs} epochs, lr {lr2:g})")
    with strategy.scope():
        qat = quantize_model(model, freeze_batchnorm=pretrained)
    qat_start = _calibrate_qat(qat, model, ds.splits["train"], val_ds, s)
    _fit_phase(qat, run, "phase3", s, train_ds, val_ds, lr2, s.qat_epochs, end2, class_weight, strategy, s.patience,
               warmup(s.qat_epochs))  # fmt: skip
    with atomic_path(run / QAT_MODEL) as tmp:
        save_qat_model(qat, tmp)
    qat = load_qat_model(run / QAT_MODEL)  # evaluate what was saved, as export will see it
    qat_probs = qat.predict(test_ds, verbose=0)
    qat_m = classification_metrics(y_test, qat_probs, names)
    _log(f"QAT model: test top-1 {qat_m['top1']:.4f} ({(qat_m['top1'] - float_m['top1']) * 100:+.2f} points)")

    rows = _history(run)
    _write_history(rows, run / "history.csv")
    plot_learning_curves(rows, run / "learning_curves.png", pretrained, qat_start=qat_start["val_top1"])
    y_pred = np.argmax(float_probs, 1)
    plot_confusion(
        y_test, y_pred, names, run / "confusion_matrix.png", f"Float model, test set (top-1 {float_m['top1']:.3f})"
    )
    plot_confusion(
        y_test,
        np.argmax(qat_probs, 1),
        names,
        run / "confusion_matrix_qat.png",
        f"QAT model, test set (top-1 {qat_m['top1']:.3f})",
    )
    plot_samples(test_images, y_test, y_pred, names, run / "samples.png", seed=s.seed)

    metrics = {
        "test_top1_float": float_m["top1"],
        "test_top1_qat": qat_m["top1"],
        "qat_minus_float_points": round((qat_m["top1"] - float_m["top1"]) * 100, 2),
        "weights_used": weights_used,
        "weights_requested": s.weights,
        "transfer_learning": pretrained,
        "epochs_run": {p: sum(1 for r in rows if r["phase"] == p) for p in ("phase1", "phase2", "phase3")},
        "qat_start_agreement": qat_start["agreement"],
        "qat_start_agreement_uncalibrated": qat_start["agreement_uncalibrated"],
        "qat_start_val_top1": qat_start["val_top1"],
        "first_epoch_accuracy": _first_epoch_accuracy(rows),
        "n_images": sizes,
        "n_skipped": len(ds.skipped),
        "class_names": names,
        "per_class_float": float_m["per_class"],
        "per_class_qat": qat_m["per_class"],
        "settings_sha256": s.sha256(),
        "train_seconds": round(time.time() - t0, 1),
    }
    write_json(run / "metrics.json", metrics)  # written last: its presence means the run is complete
    shutil.rmtree(run / "backup", ignore_errors=True)
    link_latest(run, _log)
    _log(f"done in {metrics['train_seconds']:.0f} s: {run} (float {float_m['top1']:.4f}, QAT {qat_m['top1']:.4f})")
    return metrics
