"""The run folder: what counts as a training run, what --force may delete, and the runs/latest link.

Destructive steps touch only what `python -m train` made: --force replaces a folder only if it is a training
run (its settings.json carries the settings hash train writes), only after the data has been read and the model
built, and never a folder that holds the dataset; runs/latest is replaced only while it is a symlink.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from contracts.atomic import why_unwritable
from train.settings import SETTINGS_FILE, TrainSettings


class RunError(Exception):
    """The run folder cannot be used as asked; the message says what to pass instead."""


# The mark of a training run: train.settings.write_run_settings() writes it, with a "settings_sha256" key, before
# anything else goes into a new run folder; so a folder without it is empty or not ours.
MARKER = SETTINGS_FILE
FLOAT_MODEL = "model_float.keras"
QAT_MODEL = "model_qat.h5"


def is_training_run(folder: Path) -> bool:
    """Whether the folder's settings.json is one train wrote (an object with a settings hash)."""
    try:
        doc = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "settings_sha256" in doc


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def check_out_folder(s: TrainSettings, force: bool) -> None:
    """Refuses an --out that is not safe to write (or, with --force, to delete), before anything is read or written.

    Raises:
        RunError: --out is a file or cannot be written (contracts.atomic.why_unwritable), holds or lies inside the
            dataset, or is a non-empty folder that train did not make.
    """
    run = s.run_dir
    if why := why_unwritable(run, kind="folder"):
        raise RunError(f"--out {run} {why}: pass --out runs/NEW_NAME in a folder you can write")
    data = Path(s.data)
    if data.exists():
        if _inside(data, run):
            raise RunError(f"--out {run} holds the dataset {data}: pass --out runs/NEW_NAME (nothing was deleted)")
        if _inside(run, data):
            raise RunError(f"--out {run} is inside the dataset {data}, where it would be read as a class: pass "
                           "--out runs/NEW_NAME")  # fmt: skip
    if run.is_dir() and any(run.iterdir()) and not is_training_run(run):
        verb = "--force would delete" if force else "--out"
        raise RunError(f"{verb} {run}, a folder that is not a training run (no settings.json written by python -m "
                       "train): pass --out runs/NEW_NAME; nothing was deleted")  # fmt: skip


def previous_run(s: TrainSettings, force: bool) -> bool:
    """True if the folder holds this very run, complete. Refuses a run with other settings unless --force.

    Complete means metrics.json and the models it describes are all there: a run missing a model file resumes
    (its finished phases reload from their checkpoints) instead of being declared done.
    """
    run = s.run_dir
    if force or not (run / MARKER).is_file():
        return False
    old = json.loads((run / MARKER).read_text())
    if old.get("settings_sha256") != s.sha256():
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in s.to_dict().items() if k in old and old[k] != v]
        raise RunError(
            f"{run} holds a run with other settings ({'; '.join(diff[:4]) or 'different version'}): "
            "pass --out runs/NEW_NAME, or --force to replace it"
        )
    try:  # a damaged metrics.json (written last) means the run did not finish: resume it
        json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return all((run / f).is_file() for f in (FLOAT_MODEL, QAT_MODEL))


def has_progress(run: Path) -> bool:
    """Whether a run folder holds a finished phase (checkpoints/PHASE.json) or a mid-phase Keras backup (backup/):
    what a re-run of the same command resumes from."""
    return any(run.glob("checkpoints/*.json")) or (run / "backup").is_dir()


def replace_run(run: Path) -> None:
    """--force, once the data has been read: deletes the old run (checked by check_out_folder to be one)."""
    if run.is_dir() and (is_training_run(run) or not any(run.iterdir())):
        shutil.rmtree(run)


def link_latest(run: Path, log=print) -> None:
    """Points runs/latest at this run; a file or folder named latest that is not our link is left alone."""
    latest = run.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        log(f"{latest} is not a link made by python -m train: left as it is ({run} is not linked as latest)")
        return
    tmp = run.parent / ".latest.partial"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(run.name, tmp)
    os.replace(tmp, latest)
