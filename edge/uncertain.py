"""--save-uncertain: keeping the frames the model is unsure of, for a person to sort into class folders that
`python -m train --data DIR` and `python -m edge.collect --out DIR` take as they are.

    check_uncertain_folder("uncertain/")          # before any camera opens: EdgeError if it cannot be written
    keeper = UncertainKeeper("uncertain/", below=0.6, labels=classifier.labels, model="tflite_int8.tflite")
    keeper.offer(frame, result)                   # per frame, from the loop: keeps a copy (saved on a thread), or not
    keeper.close()                                # logs "kept 12 uncertain frames in uncertain/_unsorted (below 0.6)"

Layout: DIR/_unsorted/ holds the kept frames, each with a .json of its predictions beside it; DIR/<label>/ is an
empty folder per model label to move them into; DIR/README.txt says so. Train skips folders named _... and files
that are not images.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from contracts.atomic import why_unwritable, write_text
from contracts.errors import EdgeError
from edge.saver import FrameSaver, count_images, frame_stem, label_problem

log = logging.getLogger("edge")
UNSORTED = "_unsorted"  # kept frames wait here; train skips folders named _... (not a class)
MAX_LABEL_FOLDERS = 100  # more labels than this (ImageNet's 1000): no empty folder per label, the README says so


def check_uncertain_folder(path: str | os.PathLike) -> None:
    """Fails early, before any camera opens, on a --save-uncertain folder that cannot be written.

    Raises:
        EdgeError: one line naming the folder and the fix.
    """
    why = why_unwritable(Path(path) / UNSORTED, "folder")
    if why:
        raise EdgeError(f"--save-uncertain {path}: {Path(path) / UNSORTED} {why}: pass a folder you can write")


README = """\
Frames the model was unsure of are saved in _unsorted/, each with a .json beside it: the model's top predictions,
its best score and the threshold, the time, the frame index, the source and the model file.

To teach the model, move each image from _unsorted/ into the folder of its class ({folders}). Make a new folder
for a class the model does not know. The .json files may go along or stay: training skips them.

Then train on this folder, alone or copied into your own photos (folders named _... are not classes):
    python -m train --data {root}
or add photos from the camera:
    python -m edge.collect --out {root} --labels LABEL1,LABEL2
Every class folder needs a few images before training: remove the ones you leave empty.
"""


def prepare_uncertain_folder(path: str | os.PathLike, labels: list[str] | None) -> list[str]:
    """Makes path/_unsorted/ and one empty folder per label, and a README.txt saying how to sort (if absent).

    Returns:
        the labels that got a folder (not those that cannot be folder names).
    """
    root = Path(path)
    (root / UNSORTED).mkdir(parents=True, exist_ok=True)
    usable = [label for label in labels or [] if label_problem(label) is None]
    if len(usable) < len(labels or []):
        log.info("no folder in %s for labels that cannot be folder names: make those yourself", root)
    if len(usable) > MAX_LABEL_FOLDERS:
        usable = []
    for label in usable:
        (root / label).mkdir(exist_ok=True)
    if not (root / "README.txt").exists():
        folders = "one folder per label is made here" if usable else "make a folder per class you need"
        write_text(root / "README.txt", README.format(folders=folders, root=root))
    return usable


class UncertainKeeper:
    """--save-uncertain: saves frames whose best score is below a threshold into DIR/_unsorted/, at most one per
    `every_s`, with their predictions as JSON beside them, for a person to sort into DIR/<label>/."""

    def __init__(self, folder: str | os.PathLike, below: float, every_s: float = 1.0, max_files: int | None = None,
                 labels: list[str] | None = None, *, model: str | None = None, top_k: int = 3,
                 saver: FrameSaver | None = None, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        """Makes the layout (prepare_uncertain_folder; call check_uncertain_folder first for a one-line error).

        Args:
            folder: the folder; frames go to folder/_unsorted/.
            below: a frame whose best score is below this is kept.
            every_s: at least this many seconds between kept frames (a long unsure stretch is not 30 files a second).
            max_files: keep nothing more once folder/_unsorted/ holds this many images (earlier runs' count too).
            labels: the model's labels, in score order: their folders are made, and the JSON names the top-k.
            model: the model's file name, for the JSON.
            top_k: predictions listed in the JSON.
            saver: writes the files (default: a FrameSaver of its own); clock: seconds (tests inject one).
        """
        self.folder, self.unsorted = Path(folder), Path(folder) / UNSORTED
        self.below, self.every_s, self.max_files = float(below), every_s, max_files
        self.labels, self.model, self.top_k = list(labels) if labels else None, model, top_k
        try:
            prepare_uncertain_folder(folder, self.labels)
        except OSError as e:  # a label's folder name is taken by a file, or the disk refuses
            raise EdgeError(
                f"--save-uncertain {folder}: cannot make its folders ({e}): pass a folder you can write"
            ) from None
        self._before = count_images(self.unsorted) if max_files is not None else 0
        self._saver, self._clock = saver or FrameSaver(), clock
        self._last = -float("inf")
        self._full = False  # max_files reached (said once)
        self.kept = 0  # frames handed to the saver
        self.skipped = 0  # frames below the threshold that were not kept (rate limit, max_files, saver busy)

    def offer(self, frame, result) -> None:
        """Looks at one classified frame (edge.frames.Frame, contracts.runners.classifier.Result); keeps a copy if
        it is below the threshold, the rate limit allows and max_files is not reached. Never waits for the disk."""
        best = float(result.scores.max())
        if best >= self.below:  # the common path
            return
        now = self._clock()
        if now - self._last < self.every_s:
            self.skipped += 1
            return
        if self.max_files is not None and self._before + self.kept >= self.max_files:
            if not self._full:
                self._full = True
                log.warning("%s holds %d images: no more uncertain frames are kept (sort them into class folders, "
                            "or allow more)", self.unsorted, self.max_files)  # fmt: skip
            self.skipped += 1
            return
        sidecar = {
            "time": datetime.fromtimestamp(frame.time).astimezone().isoformat(timespec="milliseconds"),
            "frame": frame.index,
            "source": frame.name,
            "top_k": self._top_k(result),
            "score": round(best, 5),  # the best score
            "below": self.below,  # the threshold it was under
            "model": self.model,
        }
        # A copy: the loop draws the overlay into frame.image right after this.
        if self._saver.submit(self.unsorted, frame.image.copy(), frame_stem(frame.index, frame.time), sidecar):
            self._last = now
            self.kept += 1
        else:
            self.skipped += 1

    def _top_k(self, result) -> list[dict]:
        scores = np.asarray(result.scores, np.float64).ravel()
        if self.labels is None or len(self.labels) != scores.size:  # the result's own list (it may be cut short)
            return [{"label": c.label, "score": round(float(c.score), 5)} for c in result.categories]
        best = np.argsort(-scores, kind="stable")[: self.top_k]
        return [{"label": self.labels[i], "score": round(float(scores[i]), 5)} for i in best]

    def summary(self) -> str:
        """One line: how many frames were saved, where, below what, and what was not."""
        s = self._saver
        line = f"kept {s.saved} uncertain frame{'' if s.saved == 1 else 's'} in {self.unsorted} (below {self.below:g})"
        if self.skipped:
            cap = f", at most {self.max_files} files" if self.max_files is not None else ""
            line += f"; {self.skipped} more below it were not kept (one per {self.every_s:g} s{cap})"
        if s.failed:
            line += f"; {s.failed} could not be written"
        return line

    def close(self, timeout: float = 5.0) -> str:
        """Saves what is queued, logs the summary line and returns it."""
        self._saver.close(timeout)
        line = self.summary()
        log.info("%s", line)
        return line
