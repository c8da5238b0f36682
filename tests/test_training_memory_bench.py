"""benchmarks.training_memory without training: rows merge by key, outputs come out, bad input is one line, and
--export-only measures the export of a run already trained."""

from __future__ import annotations

import json

import cv2
import pytest


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
    assert "| after | 20,000 | 96 | 2.25 GB | 1 min 40 s | file | 50 / 60 / - | 1.0 | - |" in md, md
    assert (tmp_path / "training_memory.csv").read_text().count("\n") == 4
    img = cv2.imread(str(tmp_path / "training_memory.png"))
    assert img is not None and img.shape[1] > 500


def test_bad_sizes_and_a_repo_that_is_not_a_checkout_are_one_line(tmp_path, capsys):
    from benchmarks.training_memory import main

    assert main(["--sizes", "3k", "--out", str(tmp_path)]) == 2
    assert main(["--sizes", "50", "--out", str(tmp_path)]) == 2
    assert main(["--sizes", "3000", "--repo", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main(["--sizes", "3000", "--export-only", "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("error: ") for line in out), out
    assert "--sizes '3k'" in out[0] and "at least 100" in out[1] and "has no train/__main__.py" in out[2]
    assert "no finished after run of 3000 images at 96 px" in out[3] and "without --export-only" in out[3]
    assert not (tmp_path / "o" / "data").exists() or not any((tmp_path / "o" / "data").iterdir())  # nothing written


@pytest.mark.slow
def test_export_only_adds_export_memory_to_a_finished_run(tmp_path, exported_run):
    """--export-only exports a run already trained (a copy of the session's tiny run) and fills in its row."""
    import shutil

    from benchmarks.training_memory import main

    out = tmp_path / "bench"
    run = out / "runs" / "after-32-300"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("export"))
    (out / "training_memory.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "training_memory.json").write_text(json.dumps([_row("after", 300, 1500.0) | {"image_size": 32}]))
    argv = ["--sizes", "300", "--image-size", "32", "--export-only", "--export-formats", "tflite_fp32"]
    assert main([*argv, "--out", str(out)]) == 0
    [row] = json.loads((out / "training_memory.json").read_text())
    assert row["export_error"] == "" and row["peak_rss_mb"] == 1500.0, row  # the training figures are kept
    assert 200 < row["export_peak_rss_mb"] < 8000 and row["export_wall_s"] > 0, row
    assert row["export_test_images"] == len(json.loads((run / "splits.json").read_text())["splits"]["test"]["labels"])
    assert [f.name for f in (run / "export").glob("*.tflite")] == ["tflite_fp32.tflite"]
    assert (
        f"| {row['export_peak_rss_mb'] / 1024:.2f} GB ({row['export_test_images']:,}) |"
        in (out / "training_memory.md").read_text()
    )
