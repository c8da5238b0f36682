"""run_training(): one run as a list of named steps, resumable, every output written atomically into runs/NAME/.

The steps, in order (_train): check the run folder (a finished run is answered from its metrics), check a weights
file, read the data, build the pipelines and the model (which settles the weights really used), start the run
folder (settings.json, once), phase 1 (a new head on the frozen backbone), phase 2 (the top of the backbone
fine-tuned at a lower learning rate), evaluate the float model, phase 3 (quantization-aware training), evaluate the
QAT model as saved, then the outputs (history, plots, metrics.json last). Each phase's end state is saved, and
BackupAndRestore saves every epoch, so re-running the same command after Ctrl-C or a kill resumes.
"""

from __future__ import annotations

import json
import shutil
import time

from contracts.atomic import atomic_path, write_json, write_text
from contracts.console import log
from train.cache import remove_cache_folder
from train.data import Dataset, SplitImages, load_dataset, save_splits
from train.evaluate import Evaluation, calibrate_qat, evaluate
from train.phases import FitContext, Phase, fit_phase, make_context
from train.runfolder import FLOAT_MODEL, QAT_MODEL, RunError, check_out_folder, link_latest, previous_run, replace_run
from train.settings import TrainSettings, camera_strengths, resolve, write_run_settings

__all__ = ["FLOAT_MODEL", "QAT_MODEL", "RunError", "run_training"]


def run_training(settings: TrainSettings, force: bool = False) -> dict:
    """Trains a run end to end and returns its metrics (see README, "Outputs of make train").

    Ctrl-C at any point ends with the resume message and SystemExit(130).

    Raises:
        RunError: the run folder holds a run with other settings, or cannot be written.
        train.data.DataError: the dataset is unusable (message names the folder and the fix).
        train.settings.SettingsError: a weights file that does not fit, or an unknown --fine-tune-from layer.
    """
    s = resolve(settings)
    interrupted = _Interrupts()
    try:
        with interrupted:
            if s.strategy == "multiworker":  # TF_CONFIG's workers, the chief alone writing the run folder
                from train.workers import run_on_workers

                return run_on_workers(s, force, _train)
            return _train(s, force)
    except KeyboardInterrupt:
        pass
    except Exception:
        if not interrupted.seen:
            raise
        # TensorFlow turns a Ctrl-C inside its own code into other errors ("Concurrent access?"): still a Ctrl-C
    log(f"\ninterrupted: re-run the same command to resume {s.run_dir} from its last finished epoch")
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
    """The steps of one run, in order; each is a function below (or in train.phases, train.evaluate)."""
    if (done := finished_metrics(s, force)) is not None:
        return done
    check_weights(s)
    t0 = time.time()
    ds = read_data(s)  # before anything is written or deleted: a bad --data leaves the folder as it was
    ctx = make_context(s, ds)
    model, weights_used = build(s, ctx, len(ds.class_names))
    start_run(s, ds, weights_used, force)
    ctx.open_cache()  # a file cache's folder, now that settings.json is written (an interrupted run's goes first)
    pretrained = weights_used != "none"
    if not pretrained:
        log("no pretrained weights: nothing to transfer, so phases 1 and 2 train the whole network")
    end = train_float(model, s, ctx, pretrained)
    float_eval = evaluate(model, ctx.test, ds.splits["test"].labels, ds.class_names)
    log(f"float model: test top-1 {float_eval.top1:.4f}")
    qat, qat_start = train_qat(model, s, ctx, ds, pretrained, end)
    qat_eval = evaluate(qat, ctx.test, ds.splits["test"].labels, ds.class_names)
    log(f"QAT model: test top-1 {qat_eval.top1:.4f} ({(qat_eval.top1 - float_eval.top1) * 100:+.2f} points)")
    metrics = write_outputs(s, ds, ctx, float_eval, qat_eval, qat_start, weights_used, t0)
    log(f"done in {metrics['train_seconds']:.0f} s: {s.run_dir} (float {float_eval.top1:.4f}, QAT {qat_eval.top1:.4f})")
    return metrics


def finished_metrics(s: TrainSettings, force: bool) -> dict | None:
    """The metrics of this very run if the folder holds it complete, else None (train, or resume).

    Raises:
        RunError: --out is unsafe to write, or holds a run with other settings (without --force).
    """
    check_out_folder(s, force)
    if not previous_run(s, force):
        return None
    log(f"{s.run_dir} is already complete (same settings); pass --force to train again")
    link_latest(s.run_dir, log)
    return json.loads((s.run_dir / "metrics.json").read_text())


def check_weights(s: TrainSettings) -> None:
    """A --weights file is checked before any data is read (train.weights.check_weights_file)."""
    if s.weights not in ("imagenet", "none"):
        from train.weights import check_weights_file

        log(f"weights: {s.weights}: {check_weights_file(s.weights, s.backbone, s.alpha)}")


def read_data(s: TrainSettings) -> Dataset:
    """--data as a Dataset (train.data.load_dataset), its classes and split sizes logged."""
    ds = load_dataset(s.data, s.image_size, s.val_split, s.test_split, s.seed, s.cache_dir)
    n = {k: len(v) for k, v in ds.splits.items()}
    log(f"data: {ds.source}, {len(ds.class_names)} classes, train/val/test = {n['train']}/{n['val']}/{n['test']}")
    return ds


def model_kwargs(s: TrainSettings, num_classes: int) -> dict:
    """train.model.build_model's arguments for a run's settings, but the weights."""
    return dict(num_classes=num_classes, image_size=s.image_size, backbone=s.backbone, alpha=s.alpha,
                dropout=s.dropout, augment=s.augment, flip=s.flip, bn_momentum=s.bn_momentum,
                camera=camera_strengths(s), camera_fraction=s.aug_fraction)  # fmt: skip


def build(s: TrainSettings, ctx: FitContext, num_classes: int):
    """The model under the run's strategy, and the weights it was really built from.

    Returns:
        (model, weights_used): weights_used is s.weights, or "none" when ImageNet weights could not be downloaded
        (training then goes on from random init, with a loud warning).
    """
    from train.model import WeightsUnavailable, build_model

    kw = model_kwargs(s, num_classes)
    weights_used = s.weights
    with ctx.strategy.scope():
        try:
            model = build_model(weights=s.weights, **kw)
        except WeightsUnavailable as e:
            bar = "!" * 78
            log(f"{bar}\nWARNING: ImageNet weights could not be downloaded ({e}).\n"
                "Training goes on from RANDOM INIT: there is no transfer learning in this run, and the whole\n"
                f"network trains. Pass --weights PATH.h5 to use a local copy.\n{bar}")  # fmt: skip
            weights_used = "none"
            model = build_model(weights="none", **kw)
    return model, weights_used


def start_run(s: TrainSettings, ds: Dataset, weights_used: str, force: bool) -> None:
    """--force replaces the old run; then settings.json (the run's mark, first), labels.txt, splits.json and the
    list of skipped files are written."""
    run = s.run_dir
    if force:
        replace_run(run)
    run.mkdir(parents=True, exist_ok=True)
    write_run_settings(run, s, weights_used)
    write_text(run / "labels.txt", "\n".join(ds.class_names) + "\n")
    save_splits(ds, run / "splits.json")
    if ds.skipped:
        write_text(run / "skipped.txt", "".join(f"{p}\t{why}\n" for p, why in ds.skipped))
        log(f"{len(ds.skipped)} unreadable file(s) skipped, listed in {run / 'skipped.txt'}")


def train_float(model, s: TrainSettings, ctx: FitContext, pretrained: bool) -> int:
    """Phases 1 (head) and 2 (fine-tuning), then saves the float model; returns the epoch count at its end."""
    from train.model import set_trainable, without_camera_layers

    log(f"phase 1 ({s.epochs} epochs, lr {s.learning_rate:g}): "
        + set_trainable(model, "head", s.backbone, pretrained=pretrained))  # fmt: skip
    phase1 = Phase(name="phase1", lr=s.learning_rate, epochs=s.epochs, initial_epoch=0)
    end = fit_phase(model=model, phase=phase1, ctx=ctx)
    lr2 = s.learning_rate * s.fine_tune_lr_factor
    log(f"phase 2 ({s.fine_tune_epochs} epochs, lr {lr2:g}): "
        + set_trainable(model, "fine_tune", s.backbone, s.fine_tune_from, pretrained))  # fmt: skip
    # Phases 2 and 3 continue a trained model with a fresh optimizer: it warms up (FitContext.warmup_steps).
    phase2 = Phase(name="phase2", lr=lr2, epochs=s.fine_tune_epochs, initial_epoch=end,
                   warmup_steps=ctx.warmup_steps(s.fine_tune_epochs))  # fmt: skip
    end = fit_phase(model=model, phase=phase2, ctx=ctx)
    with atomic_path(s.run_dir / FLOAT_MODEL) as tmp:
        without_camera_layers(model).save(str(tmp))  # loads anywhere; the identity layers go (train.model)
    return end


def train_qat(model, s: TrainSettings, ctx: FitContext, ds: Dataset, pretrained: bool, initial_epoch: int):
    """Phase 3: the float model's QAT twin, its ranges calibrated, trained and saved.

    Returns:
        (the QAT model as reloaded from model_qat.h5, which is what export sees; calibrate_qat's figures).
    """
    from train.qat import load_qat_model, quantize_model, save_qat_model

    lr = s.learning_rate * s.fine_tune_lr_factor
    log(f"phase 3, quantization-aware training ({s.qat_epochs} epochs, lr {lr:g})")
    with ctx.strategy.scope():
        qat = quantize_model(model, freeze_batchnorm=pretrained)
    qat_start = calibrate_qat(qat, model, ds.splits["train"], ctx.val, s)
    phase = Phase(name="phase3", lr=lr, epochs=s.qat_epochs, initial_epoch=initial_epoch,
                  warmup_steps=ctx.warmup_steps(s.qat_epochs))  # fmt: skip
    fit_phase(model=qat, phase=phase, ctx=ctx)
    with atomic_path(s.run_dir / QAT_MODEL) as tmp:
        save_qat_model(qat, tmp)
    return load_qat_model(s.run_dir / QAT_MODEL), qat_start


def write_outputs(s: TrainSettings, ds: Dataset, ctx: FitContext, float_eval: Evaluation, qat_eval: Evaluation,
                  qat_start: dict, weights_used: str, t0: float) -> dict:  # fmt: skip
    """history.csv, the plots, then metrics.json (last: its presence means the run is complete) and runs/latest.

    t0 is the time.time() the training started at (metrics.json's train_seconds run from it).

    Returns:
        The metrics (README, "Outputs of make train").
    """
    from train.report import (
        first_epoch_accuracy,
        history_rows,
        plot_confusion,
        plot_learning_curves,
        plot_samples,
        write_history,
    )
    from train.throughput import peak_rss_mb, phase_figures

    run, names, y_test = s.run_dir, ds.class_names, ds.splits["test"].labels
    pretrained = weights_used != "none"
    rows = history_rows(run)
    write_history(rows, run / "history.csv")
    plot_learning_curves(rows, run / "learning_curves.png", pretrained, qat_start=qat_start["val_top1"])
    for ev, what, name in ((float_eval, "Float", "confusion_matrix"), (qat_eval, "QAT", "confusion_matrix_qat")):
        plot_confusion(y_test, ev.pred, names, run / f"{name}.png", f"{what} model, test set (top-1 {ev.top1:.3f})")
    test_images = SplitImages(ds.splits["test"], s.image_size)  # decodes the 24 it shows, not the whole split
    plot_samples(test_images, y_test, float_eval.pred, names, run / "samples.png", seed=s.seed)
    metrics = {
        "test_top1_float": float_eval.top1,
        "test_top1_qat": qat_eval.top1,
        "qat_minus_float_points": round((qat_eval.top1 - float_eval.top1) * 100, 2),
        "weights_used": weights_used,
        "weights_requested": s.weights,
        "transfer_learning": pretrained,
        "epochs_run": {p: sum(1 for r in rows if r["phase"] == p) for p in ("phase1", "phase2", "phase3")},
        "qat_start_agreement": qat_start["agreement"],
        "qat_start_agreement_uncalibrated": qat_start["agreement_uncalibrated"],
        "qat_start_val_top1": qat_start["val_top1"],
        "first_epoch_accuracy": first_epoch_accuracy(rows),
        "n_images": {k: len(v) for k, v in ds.splits.items()},
        "n_skipped": len(ds.skipped),
        "class_names": names,
        "per_class_float": float_eval.per_class,
        "per_class_qat": qat_eval.per_class,
        "settings_sha256": s.sha256(),
        "train_seconds": round(time.time() - t0, 1),
        **phase_figures(run),  # images_per_s, images_per_s_steady, peak_rss_mb_by_phase (train.throughput)
        "peak_rss_mb": peak_rss_mb(),
        "data_cache": ctx.cache.to_dict() if ctx.cache else None,
    }
    write_json(run / "metrics.json", metrics)
    shutil.rmtree(run / "backup", ignore_errors=True)
    remove_cache_folder(run)
    link_latest(run, log)
    return metrics
