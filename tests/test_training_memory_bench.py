"""benchmarks.training_memory without training: rows merge by key, outputs come out, bad input is one line."""

from __future__ import annotations

import json

import cv2


def _row(label, n, rss, **kw):
    return dict(label=label, images=n, image_size=96, alpha=0.35, peak_rss_mb=rss, wall_s=100.0, data_cache="file",
                images_per_s_phase1=50.0, images_per_s_phase2=60.0, images_per_s_phase3=None, load_before=1.0,
                exit_code=0, error="", **kw)  # fmt: skip


def test_rows_merge_by_key_and_the_outputs_are_written(tmp_path):
    from benchmarks.training_memory import merge_rows, write_outputs

    write_outputs(tmp_path, [_row("before", 3000, 2200.0), _row("after", 3000, 1900.0)])
    rows = merge_rows(tmp_path / "training_memory.json", [_row("after", 3000, 1800.0), _row("after", 20000, 2300.0)])
    assert [(r["label"], r["images"], r["peak_rss_mb"]) for r in rows] == [
        ("after", 3000, 1800.0), ("after", 20000, 2300.0), ("before", 3000, 2200.0)
    ]  # fmt: skip
    write_outputs(tmp_path, rows)
    assert json.loads((tmp_path / "training_memory.json").read_text()) == rows
    md = (tmp_path / "training_memory.md").read_text()
    assert "| after | 20,000 | 96 | 2.25 GB | 1 min 40 s | file | 50 / 60 / - | 1.0 |" in md, md
    assert (tmp_path / "training_memory.csv").read_text().count("\n") == 4
    img = cv2.imread(str(tmp_path / "training_memory.png"))
    assert img is not None and img.shape[1] > 500


def test_bad_sizes_and_a_repo_that_is_not_a_checkout_are_one_line(tmp_path, capsys):
    from benchmarks.training_memory import main

    assert main(["--sizes", "3k", "--out", str(tmp_path)]) == 2
    assert main(["--sizes", "50", "--out", str(tmp_path)]) == 2
    assert main(["--sizes", "3000", "--repo", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.startswith("error: ") for line in out), out
    assert "--sizes '3k'" in out[0] and "at least 100" in out[1] and "has no train/__main__.py" in out[2]
