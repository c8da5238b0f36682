"""benchmarks.pipeline_throughput without training: the table's comparisons, and bad input as one line each."""

from __future__ import annotations


def _row(arm, rates, cpu, rss=1200.0):
    return dict(arm=arm, images=2100, image_size=96, images_per_s=rates, cpu_ms_per_image=cpu, peak_rss_mb=rss)


def test_the_table_compares_steady_rates_with_the_first_arm():
    from benchmarks.pipeline_throughput import table

    rows = [
        _row("before", [10.0, 100.0, 100.0], [30.0, 8.0, 8.0], 1400.0),
        _row("memory", [5.0, 90.0, 90.0], [40, 9, 9]),
        _row("before", [12.0, 80.0, 120.0], [30.0, 8.0, 8.0]),
        _row("memory", [6.0, 95.0, 85.0], [40, 10, 10]),
    ]
    md = table(rows).splitlines()
    assert md[0].startswith("| arm | rounds | steady images/s | vs before |"), md
    # the first epoch (cache filling) is left out: before 100 images/s, memory 90 (-10.0%); CPU 8.00 vs 9.50 (+18.8%)
    assert md[2] == "| before | 2 | 100.0 | +0.0% | 8.00 | +0.0% | 1.37 GB |", md
    assert md[3] == "| memory | 2 | 90.0 | -10.0% | 9.50 | +18.8% | 1.17 GB |", md


def test_bad_arms_a_missing_before_checkout_and_missing_data_are_one_line(tmp_path, capsys):
    from benchmarks.pipeline_throughput import main

    (tmp_path / "data").mkdir()
    assert main(["--data", str(tmp_path / "data"), "--arms", "memory,disk", "--out", str(tmp_path / "o")]) == 2
    assert main(["--data", str(tmp_path / "data"), "--arms", "before,memory", "--out", str(tmp_path / "o")]) == 2
    assert main(["--data", str(tmp_path / "data"), "--before", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["--data", str(tmp_path / "data"), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and all(line.startswith("error: ") for line in out), out
    assert "'memory,disk'" in out[0] and "needs --before" in out[1] and str(tmp_path) in out[2]
    assert "nothing is not a folder" in out[3] and "at least 2" in out[4]
    assert not (tmp_path / "o").exists()  # nothing written
