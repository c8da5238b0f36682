"""What a person looks at after training: the history of every epoch, learning curves, confusion matrix, sample
predictions, per-class metrics."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, classification_report  # noqa: E402

from contracts.atomic import atomic_path, write_text  # noqa: E402

PHASES = ("phase1", "phase2", "phase3")
HISTORY_COLUMNS = ("phase", "epoch", "accuracy", "loss", "val_accuracy", "val_loss")
PHASE_TITLES = {"phase1": "1: head", "phase2": "2: fine-tune", "phase3": "3: QAT"}
# Without pretrained weights phases 1 and 2 train the whole network: the plot must not claim otherwise.
PHASE_TITLES_SCRATCH = {"phase1": "1: all layers", "phase2": "2: all, lower lr", "phase3": "3: QAT"}


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def read_history(path: str | Path) -> list[dict]:
    """The rows of one phase's CSVLogger file (logs/PHASE.csv); [] if the phase never ran."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def history_rows(run: str | Path) -> list[dict]:
    """Every epoch of the three phases in order, each row with its "phase"; an epoch run twice (resumed) once."""
    rows = []
    for phase in PHASES:
        by_epoch = {r["epoch"]: r for r in read_history(Path(run) / "logs" / f"{phase}.csv")}  # resumed: last wins
        rows += [dict(r, phase=phase) for _, r in sorted(by_epoch.items(), key=lambda kv: int(kv[0]))]
    return rows


def write_history(rows: list[dict], path: str | Path) -> None:
    """history.csv: HISTORY_COLUMNS, one row per epoch."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def first_epoch_accuracy(rows: list[dict]) -> dict:
    """Training accuracy of each phase's last and first epochs, and the drop where one phase hands over."""
    out = {}
    for prev, phase in zip(PHASES, PHASES[1:]):
        a = [float(r["accuracy"]) for r in rows if r["phase"] == prev]
        b = [float(r["accuracy"]) for r in rows if r["phase"] == phase]
        if a and b:
            out[phase] = {"previous_last": round(a[-1], 4), "first": round(b[0], 4),
                          "drop_points": round((a[-1] - b[0]) * 100, 2)}  # fmt: skip
    return out


def plot_learning_curves(rows: list[dict], path: str | Path, pretrained: bool = True, qat_start=None) -> None:
    """Accuracy and loss per epoch, train and val, with the phase boundaries marked.

    qat_start: the QAT model's val accuracy before its first step, drawn at the start of phase 3.
    """
    titles = PHASE_TITLES if pretrained else PHASE_TITLES_SCRATCH
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    epochs = np.arange(1, len(rows) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, style, label in ((metric, "-o", "train"), ("val_" + metric, "-s", "val")):
            vals = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
            ax.plot(epochs, vals, style, ms=3, label=label)
        prev = None
        for i, r in enumerate(rows):
            if r["phase"] != prev:
                if i:
                    ax.axvline(i + 0.5, color="gray", ls="--", lw=1)
                ax.text(i + 0.7, 1.0, titles.get(r["phase"], r["phase"]), transform=ax.get_xaxis_transform(),
                        va="bottom", fontsize=8, color="dimgray")  # fmt: skip
                prev = r["phase"]
        first_qat = next((i for i, r in enumerate(rows) if r["phase"] == "phase3"), None)
        if metric == "accuracy" and qat_start is not None and first_qat is not None:
            ax.plot([first_qat + 0.5], [qat_start], "*", ms=11, color="crimson", label="QAT start (val)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if metric == "accuracy" else "upper right")
    axes[1].set_yscale("log")
    fig.suptitle("Learning curves" + ("" if pretrained else " (from random init: no pretrained weights)"), y=1.06)
    save_figure(fig, path)


def plot_confusion(y_true, y_pred, class_names: list[str], path: str | Path, title: str) -> None:
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * n + 2), max(4, 0.55 * n + 1.5)))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(n)), display_labels=class_names, ax=ax, colorbar=False,
        cmap="Blues", xticks_rotation=45 if max(len(c) for c in class_names) > 3 else 0,
    )  # fmt: skip
    ax.set_title(title)
    save_figure(fig, path)


def plot_samples(images, y_true, y_pred, class_names, path: str | Path, n: int = 24, seed: int = 0) -> None:
    """A grid of test images with true and predicted labels; mistakes in red, shown first."""
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(y_true != y_pred)
    right = np.flatnonzero(y_true == y_pred)
    pick = np.concatenate([rng.permutation(wrong)[: n // 3], rng.permutation(right)])[:n]
    cols = 8
    rows = max(1, int(np.ceil(len(pick) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.75), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick):
        ax.imshow(images[i])
        ok = y_true[i] == y_pred[i]
        ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]}", fontsize=8,
                     color="black" if ok else "red")  # fmt: skip
    fig.suptitle(f"Test samples ({len(wrong)} of {len(y_true)} wrong; mistakes in red)")
    save_figure(fig, path)


def classification_metrics(y_true, probs, class_names: list[str]) -> dict:
    """Top-1 and per-class precision/recall/F1 (scikit-learn)."""
    y_pred = np.argmax(probs, axis=1)
    rep = classification_report(
        y_true, y_pred, labels=list(range(len(class_names))), target_names=class_names, output_dict=True,
        zero_division=0,
    )  # fmt: skip
    per_class = {c: {k: round(float(rep[c][k]), 4) for k in ("precision", "recall", "f1-score", "support")}
                 for c in class_names}  # fmt: skip
    return {"top1": round(float(accuracy_score(y_true, y_pred)), 4), "per_class": per_class}
