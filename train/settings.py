"""TrainSettings: every choice one training run makes, frozen and saved as runs/NAME/settings.json.

write_run_settings() writes that file once per training command, with the weights the model was really built from;
load_run_settings() reads both back (export, benchmarks), load_settings() the settings alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from contracts.atomic import write_json
from contracts.console import first_line
from train.cache import CACHE_MODES

SETTINGS_FILE = "settings.json"
BACKBONES = ("mobilenetv2", "vgg16")
STRATEGIES = ("default", "mirrored", "multiworker")
# Camera-condition augmentation (train.augment): the kinds, each a TrainSettings field aug_<kind> and a flag
# --aug-<kind> with its strength S, what S reaches (train.augment's constants; --help prints these), and the
# largest S (3x the default's reach already leaves little of most images).
AUG_KINDS = ("scale", "blur", "light", "noise", "jpeg")
AUG_HELP = {
    "scale": "resolution: down-sample by up to 1 + 7 S (log-uniform), up again nearest/bilinear/bicubic/area",
    "blur": "Gaussian or motion blur, sigma up to 2 S px (streaks 3x as long)",
    "light": "mostly dim light: gain exp(-1.6 S .. +0.5 S), gamma, contrast 1 +- 0.4 S, shot noise",
    "noise": "Gaussian sensor noise, standard deviation up to 80 S levels of 255",
    "jpeg": "JPEG compression, quality down to 100 - 85 S (at least 5)",
}
AUG_MAX_STRENGTH = 3.0

# The embedded dataset trains from random init on 2 cores, so it gets a small, fast model by default;
# real photos get the size ImageNet weights were made for.
_DEFAULT_SIZE = {"digits": (96, 0.35)}
_FALLBACK_SIZE = (224, 1.0)
# Fields no longer in TrainSettings, at the one value every run had: still hashed, so a run folder made before
# they went keeps its settings hash (it resumes, or is "already complete", instead of being refused as other settings).
_RETIRED = {"max_steps_per_epoch": 0}
# Where a run is written, how it is distributed and where its images wait: none changes the model, so a run resumes
# (or is "already complete") whatever they are.
_NOT_HASHED = ("out", "strategy", "logical_cpus", "cache_dir", "cache", "cache_budget_gb")


class SettingsError(ValueError):
    """A setting out of range or unknown; the message names the flag and the valid choices."""


@dataclass(frozen=True)
class TrainSettings:
    """Resolved settings of one run. Field comments are the documentation; --help mirrors them."""

    data: str = "digits"  # "digits", "cats_vs_dogs", or a folder of class sub-folders
    out: str = ""  # run folder; default runs/<data>-<backbone>-a<alpha>-s<size>
    backbone: str = "mobilenetv2"  # "mobilenetv2" or "vgg16"
    weights: str = "imagenet"  # "imagenet" (downloaded and cached by Keras), "none", or a local .h5 file
    alpha: float = 0.0  # MobileNetV2 width multiplier; 0 = per-dataset default (digits 0.35, else 1.0)
    image_size: int = 0  # square input side; 0 = per-dataset default (digits 96, else 224)
    batch_size: int = 32
    epochs: int = 15  # phase 1 (head on frozen backbone, or whole network without pretrained weights)
    fine_tune_epochs: int = 8  # phase 2 (top of the backbone unfrozen at a lower learning rate)
    qat_epochs: int = 3  # phase 3 (quantization-aware training)
    learning_rate: float = 1e-3  # phase 1 Adam learning rate
    fine_tune_lr_factor: float = 0.1  # phase 2 and 3 use learning_rate * this (about 10x lower)
    fine_tune_from: str = (
        ""  # first backbone layer to unfreeze (name or index); "" = MobileNetV2 100, VGG16 block5_conv1
    )
    dropout: float = 0.2  # before the softmax head
    bn_momentum: float = 0.9  # keras.applications uses 0.999, far too slow for short runs (NOTES-deps item 6)
    augment: bool = True  # all augmentation layers, active in training only; False sets every aug_* to 0
    flip: bool = True  # horizontal flips; digits turns them off (a mirrored 2 is not a 2)
    # Camera conditions (train.augment), the strength S of each kind (AUG_HELP): 0 = off, up to AUG_MAX_STRENGTH.
    aug_scale: float = 1.0  # resolution jitter, blocky and smooth
    aug_blur: float = 1.0  # out-of-focus and motion blur
    aug_light: float = 1.0  # exposure, gamma, contrast, shot noise
    aug_noise: float = 1.0  # sensor noise
    aug_jpeg: float = 1.0  # JPEG compression
    aug_fraction: float = 0.25  # share of each batch's images each kind changes; the rest pass it clean
    patience: int = 5  # EarlyStopping patience in epochs (restores the best weights)
    val_split: float = 0.15  # fractions for the stratified split when the folder has no train/val/test
    test_split: float = 0.15
    seed: int = 1337
    strategy: str = "default"  # tf.distribute: "default", "mirrored" (all local GPUs) or "multiworker" (TF_CONFIG)
    logical_cpus: int = 0  # split the CPU into N logical devices (to exercise "mirrored" without GPUs); 0 = off
    cache_dir: str = ""  # where downloads are cached; "" = ~/.cache/edge-toolkit
    # Where decoded images wait between epochs (train.cache): "auto" keeps them in memory within the budget, else in
    # a file cache in RUN/cache/ (or streams them when the disk is full too); "memory", "file" or "stream" force one.
    cache: str = "auto"
    cache_budget_gb: float = 0.0  # memory the decoded images may take under "auto"; 0 = 5% of RAM, at most 2 GB

    @property
    def run_dir(self) -> Path:
        return Path(self.out)

    @property
    def data_name(self) -> str:
        return Path(self.data).name if self.data not in ("digits", "cats_vs_dogs") else self.data

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        """Hash of everything that shapes the model (not where it is written or how it is distributed)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        d.update(_RETIRED)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def resolve(settings: TrainSettings) -> TrainSettings:
    """Fills the per-dataset defaults and the run folder; validates choices.

    Raises:
        SettingsError: an unknown backbone or strategy, or a value out of range.
    """
    if settings.backbone not in BACKBONES:
        raise SettingsError(f"--backbone {settings.backbone!r} is not supported: choose from {', '.join(BACKBONES)}")
    if settings.strategy not in STRATEGIES:
        raise SettingsError(f"--strategy {settings.strategy!r} is not supported: choose from {', '.join(STRATEGIES)}")
    if settings.cache not in CACHE_MODES:
        raise SettingsError(f"--cache {settings.cache!r} is not supported: choose from {', '.join(CACHE_MODES)}")
    if settings.cache_budget_gb < 0:
        raise SettingsError(f"--cache-budget-gb {settings.cache_budget_gb:g} is negative: give GB, or 0 for the "
                            "default")  # fmt: skip
    size, alpha = _DEFAULT_SIZE.get(settings.data, _FALLBACK_SIZE)
    size = settings.image_size or size
    alpha = settings.alpha or alpha
    if settings.backbone == "vgg16":
        alpha = 1.0  # VGG16 has no width multiplier
    if size < 32:
        raise SettingsError(f"--image-size {size} is too small: MobileNetV2 and VGG16 need at least 32")
    if (
        not 0 < settings.val_split < 1
        or not 0 < settings.test_split < 1
        or settings.val_split + settings.test_split >= 1
    ):
        raise SettingsError("--val-split and --test-split must be fractions that leave images for training")
    flip = settings.flip and settings.data != "digits"
    s = dataclasses.replace(settings, image_size=size, alpha=alpha, flip=flip, **_resolve_augment(settings))
    if not s.out:
        s = dataclasses.replace(s, out=f"runs/{s.data_name}-{s.backbone}-a{alpha:g}-s{size}")
    return s


def _resolve_augment(s: TrainSettings) -> dict:
    """The aug_* fields checked, and all 0 under --no-augment."""
    for kind in AUG_KINDS:
        v = getattr(s, "aug_" + kind)
        if not 0 <= v <= AUG_MAX_STRENGTH:
            default = getattr(TrainSettings, "aug_" + kind)
            raise SettingsError(f"--aug-{kind} {v:g} is out of range: give a strength from 0 (off) to "
                                f"{AUG_MAX_STRENGTH:g} (default {default:g})")  # fmt: skip
    if not 0 < s.aug_fraction <= 1:
        raise SettingsError(f"--aug-fraction {s.aug_fraction:g} is out of range: give a fraction above 0, at most 1")
    return {} if s.augment else {"aug_" + kind: 0.0 for kind in AUG_KINDS}


def camera_strengths(s: TrainSettings) -> dict[str, float]:
    """{kind: strength} of the camera-condition augmentation, as train.model.build_model takes it."""
    return {kind: getattr(s, "aug_" + kind) for kind in AUG_KINDS}


@dataclass(frozen=True)
class RunSettings:
    """What runs/NAME/settings.json holds: the resolved settings and the weights the model was built from."""

    settings: TrainSettings
    weights_used: str  # "imagenet", "none" (asked for, or ImageNet could not be downloaded), or a weights file


def write_run_settings(run_dir: str | Path, s: TrainSettings, weights_used: str) -> Path:
    """Writes runs/NAME/settings.json (atomically), once the model is built and the weights it used are known.

    Its "settings_sha256" key is what marks a folder as a training run (train.runfolder), so nothing else is
    written into a new run folder before it.
    """
    return write_json(Path(run_dir) / SETTINGS_FILE, dict(s.to_dict(), settings_sha256=s.sha256(),
                                                          weights_used=weights_used))  # fmt: skip


def load_run_settings(run_dir: str | Path) -> RunSettings:
    """Reads runs/NAME/settings.json back, validated field by field; unknown keys (older versions') are ignored.

    A settings.json from before weights_used was recorded gives the weights asked for, and one from before the
    camera-condition augmentation gives aug_* strengths of 0 (that run had none).

    Raises:
        FileNotFoundError: no settings.json (not a training run).
        SettingsError: one line naming the file and what is wrong: not JSON, not an object, a field of the wrong
            type, or a value resolve() would refuse.
    """
    p = Path(run_dir) / SETTINGS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: {run_dir} is not a finished training run; run `python -m train` first")
    fix = "restore the file train wrote, or train the run again with --force"
    try:
        d = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SettingsError(f"{p} is not valid JSON ({first_line(e)}): {fix}") from None
    if not isinstance(d, dict):
        raise SettingsError(f"{p} holds a JSON {type(d).__name__}, not the settings object train writes: {fix}")
    for f in dataclasses.fields(TrainSettings):
        if f.name not in d:
            continue
        want = {"str": str, "int": int, "float": (int, float), "bool": bool}[str(f.type)]
        v = d[f.name]
        if not isinstance(v, want) or (isinstance(v, bool) and str(f.type) != "bool"):
            raise SettingsError(f"{p}: {f.name} is {v!r}, not a{'n' if str(f.type) == 'int' else ''} {f.type}: {fix}")
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    before_camera = {"aug_" + kind: 0.0 for kind in AUG_KINDS if "aug_" + kind not in d}
    s = TrainSettings(**{k: v for k, v in d.items() if k in known}, **before_camera)
    try:
        resolve(s)
    except SettingsError as e:
        raise SettingsError(f"{p}: {e}; {fix}") from None
    weights_used = d.get("weights_used", s.weights)
    if not isinstance(weights_used, str):
        raise SettingsError(f"{p}: weights_used is {weights_used!r}, not a str: {fix}")
    return RunSettings(settings=s, weights_used=weights_used)


def load_settings(run_dir: str | Path) -> TrainSettings:
    """The settings part of load_run_settings() (which see, for what it raises)."""
    return load_run_settings(run_dir).settings
