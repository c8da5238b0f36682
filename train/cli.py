"""python -m train: a folder of labelled images (or digits, or cats_vs_dogs) -> runs/NAME/.

python -m train --data digits
python -m train --data ~/photos/flowers --image-size 160 --alpha 0.5 --out runs/flowers
"""

from __future__ import annotations

import argparse
import dataclasses

from train.cache import CACHE_MODES
from train.settings import AUG_HELP, AUG_KINDS, AUG_MAX_STRENGTH, BACKBONES, STRATEGIES, TrainSettings


def build_parser() -> argparse.ArgumentParser:
    d = TrainSettings()
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--data", default=d.data, help="digits (bundled, offline), cats_vs_dogs (download), or a folder of class folders")
    a("--out", default=d.out, help="run folder (default runs/<data>-<backbone>-a<alpha>-s<size>)")
    a("--backbone", default=d.backbone, choices=BACKBONES)
    a("--weights", default=d.weights, help="imagenet, none, or a local .h5 weights file")
    a("--alpha", type=float, default=d.alpha, help="MobileNetV2 width (default: digits 0.35, else 1.0)")
    a("--image-size", type=int, default=d.image_size, help="input side in pixels (default: digits 96, else 224)")
    a("--batch-size", type=int, default=d.batch_size)
    a("--epochs", type=int, default=d.epochs, help="phase 1 epochs (head on frozen backbone)")
    a("--fine-tune-epochs", type=int, default=d.fine_tune_epochs, help="phase 2 epochs")
    a("--qat-epochs", type=int, default=d.qat_epochs, help="phase 3 epochs (quantization-aware training)")
    a("--learning-rate", type=float, default=d.learning_rate, help="phase 1 learning rate")
    a("--fine-tune-lr-factor", type=float, default=d.fine_tune_lr_factor, help="phases 2-3 use lr x this")
    a("--fine-tune-from", default=d.fine_tune_from, help="first backbone layer to unfreeze, name or index")
    a("--dropout", type=float, default=d.dropout)
    a("--bn-momentum", type=float, default=d.bn_momentum)
    a("--no-augment", dest="augment", action="store_false", help="no augmentation layers at all (sets --aug-* to 0)")
    a("--no-flip", dest="flip", action="store_false", help="no horizontal flips (digits never flips)")
    _add_camera_flags(p, d)
    a("--patience", type=int, default=d.patience, help="EarlyStopping patience")
    a("--val-split", type=float, default=d.val_split)
    a("--test-split", type=float, default=d.test_split)
    a("--seed", type=int, default=d.seed)
    a("--strategy", default=d.strategy, choices=STRATEGIES, help="tf.distribute strategy")
    a("--logical-cpus", type=int, default=d.logical_cpus, help="split the CPU into N devices (test mirrored)")
    a("--cache-dir", default=d.cache_dir, help="download cache (default ~/.cache/edge-toolkit)")
    a("--cache", default=d.cache, choices=CACHE_MODES, help="where decoded images wait between epochs: auto "
      "(memory within --cache-budget-gb, else a file cache in RUN/cache/), memory, file, or stream")  # fmt: skip
    a("--cache-budget-gb", type=float, default=d.cache_budget_gb, metavar="GB",
      help="memory decoded images may take under --cache auto (default 0: 5%% of RAM, at most 2 GB)")  # fmt: skip
    a("--force", action="store_true", help="replace an existing run folder instead of resuming it")
    return p


def _add_camera_flags(p: argparse.ArgumentParser, d: TrainSettings) -> None:
    g = p.add_argument_group(
        "camera-condition augmentation (training only; strength S from 0 = off to "
        f"{AUG_MAX_STRENGTH:g}; each kind changes --aug-fraction of every batch's images)"
    )
    for kind in AUG_KINDS:
        g.add_argument(f"--aug-{kind}", type=float, default=getattr(d, "aug_" + kind), metavar="S",
                       help=f"{AUG_HELP[kind]} (default %(default)g)")  # fmt: skip
    g.add_argument("--aug-fraction", type=float, default=d.aug_fraction, metavar="F",
                   help="share of each batch's images each kind changes (default %(default)g)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    force = args.pop("force")
    settings = TrainSettings(**{f.name: args[f.name] for f in dataclasses.fields(TrainSettings) if f.name in args})
    from train.errors import DataError
    from train.run import RunError, run_training
    from train.settings import SettingsError

    try:
        run_training(settings, force=force)
    except (DataError, RunError, SettingsError, FileNotFoundError) as e:
        print(f"error: {e}", flush=True)
        return 2
    return 0
