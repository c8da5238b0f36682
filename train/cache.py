"""Where a run keeps its decoded images between epochs: in memory, in a file cache in the run folder, or nowhere.

plan = plan_cache(n_images, image_size, budget_gb, run_dir)       # what --cache and --cache-budget-gb decide
plan.line()   # "data cache: train/val/test 20,000 images x 96x96x3 uint8 = 0.55 GB, within the 1.5 GB budget ..."

Images are cached as uint8 (train.pipeline casts each batch to float32 after the cache), so a split costs
N x S x S x 3 bytes. Under the budget they stay in memory; over it they go to tf.data's file cache in RUN/cache/
(read back through the OS page cache, which the kernel gives back when memory is short, so resident memory stays
flat), removed when the run ends and at the start of every training process (an interrupted cache leaves a lockfile
and partial shards that tf.data would refuse); with too little free disk too they are streamed: decoded again every
epoch. The mode changes where images wait, never which images or in what order, so it is not part of the settings
hash: a run resumes under another budget. No TensorFlow here, so the choice is tested without it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_MODES = ("auto", "memory", "file", "stream")
CACHE_DIR = "cache"  # RUN/cache/
# The default budget: this share of physical memory, at most BUDGET_CAP_GB. Measured on 2 cores (README, "Memory"):
# the file cache, read back from the page cache, trains within a few percent of the in-memory one, so memory past
# a few GB buys nothing and the cap keeps a 24 GB machine's training as small as a 4 GB Pi's would need.
BUDGET_SHARE = 0.05
BUDGET_CAP_GB = 2.0
DISK_MARGIN_GB = 1.0  # free disk the file cache must leave behind


@dataclass(frozen=True)
class CachePlan:
    """How one run caches its decoded images, and why (plan.line() is its log line)."""

    mode: str  # "memory", "file", "stream", or "held" (a dataset that is in memory already: digits)
    gb: float  # decoded size of the three splits, uint8
    budget_gb: float  # the memory budget it was held against
    why: str  # the reason, as the log line gives it

    def line(self) -> str:
        return f"data cache: {self.why}"

    def to_dict(self) -> dict:
        return asdict(self)


def physical_memory_gb() -> float:
    """Physical RAM in GB (os.sysconf), or 4 where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 4.0


def default_budget_gb() -> float:
    """BUDGET_SHARE of physical memory, at most BUDGET_CAP_GB (1.2 GB on a 24 GB machine, 0.2 GB on a 4 GB one)."""
    return round(min(BUDGET_CAP_GB, BUDGET_SHARE * physical_memory_gb()), 2)


def free_disk_gb(path: str | Path) -> float:
    """Free space in GB on the file system that holds path (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / 1e9


def plan_cache(n_images: int, image_size: int, budget_gb: float, run_dir: str | Path, asked: str = "auto",
               in_memory: bool = False, free_gb: float | None = None) -> CachePlan:  # fmt: skip
    """The cache mode for n_images decoded at image_size: --cache asked, or (auto) by the budget and free disk.

    Args:
        budget_gb: the memory budget (--cache-budget-gb); 0 or less means default_budget_gb().
        in_memory: the dataset is an array already (digits): nothing to cache.
        free_gb: free disk at run_dir (None: measured).
    """
    budget = budget_gb if budget_gb > 0 else default_budget_gb()
    gb = n_images * image_size * image_size * 3 / 1e9
    what = f"train/val/test {n_images:,} images x {image_size}x{image_size}x3 uint8 = {gb:.2f} GB"
    if in_memory:
        return CachePlan("held", gb, budget, f"{what}, held in memory as loaded (a bundled dataset)")
    where = f"{Path(run_dir) / CACHE_DIR}"
    if asked != "auto":
        how = {"memory": "cached in memory", "file": f"cached on disk in {where}, deleted when the run ends",
               "stream": "streamed (decoded again every epoch)"}[asked]  # fmt: skip
        return CachePlan(asked, gb, budget, f"{what}: {how} (--cache {asked})")
    if gb <= budget:
        return CachePlan("memory", gb, budget, f"{what}, within the {budget:g} GB budget: cached in memory")
    free = free_disk_gb(run_dir) if free_gb is None else free_gb
    over = f"{what}, over the {budget:g} GB budget (--cache-budget-gb)"
    if free >= gb + DISK_MARGIN_GB:
        return CachePlan("file", gb, budget, f"{over}: cached on disk in {where} ({free:.0f} GB free), deleted "
                                             "when the run ends")  # fmt: skip
    return CachePlan("stream", gb, budget, f"{over}, and {where} has {free:.1f} GB free: streamed (decoded again "
                                           "every epoch)")  # fmt: skip


def cache_folder(run_dir: str | Path) -> Path:
    """RUN/cache/, or RUN/cache/WORKERn/ under TF_CONFIG, so workers sharing a folder never share a cache file."""
    root = Path(run_dir) / CACHE_DIR
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task") or {}
    except ValueError:
        task = {}
    return root / f"{task['type']}{task.get('index', 0)}" if task.get("type") else root


def reset_cache_folder(run_dir: str | Path, plan: CachePlan) -> None:
    """Removes this worker's cache folder (an interrupted run's lockfile and partial shards would break tf.data's
    cache) and, for the file mode, makes it again: tf.data does not create it."""
    folder = cache_folder(run_dir)
    shutil.rmtree(folder, ignore_errors=True)
    if plan.mode == "file":
        folder.mkdir(parents=True, exist_ok=True)


def remove_cache_folder(run_dir: str | Path) -> None:
    """At the end of the run: this worker's cache folder goes, then RUN/cache/ itself once no worker's is left."""
    folder = cache_folder(run_dir)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        (Path(run_dir) / CACHE_DIR).rmdir()
    except OSError:
        pass  # another worker's folder is still there, or there was none
