"""The run folder: --force deletes only training runs, after the data was read; runs/latest; Ctrl-C anywhere."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import tiny_settings, write_folder


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"settings_sha256": "0" * 64}))
    (folder / "history.csv").write_text("phase,epoch\n")
    return folder


def test_force_never_deletes_the_dataset(tmp_path):
    from train.run import RunError, run_training

    data = write_folder(tmp_path / "data", n_per_class=3)
    before = _snapshot(data)
    for out in (data, tmp_path):  # --out is the dataset, or a folder holding it
        with pytest.raises(RunError, match=r"holds the dataset .* \(nothing was deleted\)"):
            run_training(tiny_settings(data, out), force=True)
    with pytest.raises(RunError, match="inside the dataset"):
        run_training(tiny_settings(data, data / "runs"), force=True)
    assert _snapshot(data) == before


def test_force_refuses_a_folder_that_is_not_a_training_run(tmp_path):
    from train.run import RunError, run_training

    data = write_folder(tmp_path / "data", n_per_class=3)
    mine = tmp_path / "my-photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    for force in (True, False):
        with pytest.raises(RunError, match="not a training run .* nothing was deleted"):
            run_training(tiny_settings(data, mine), force=force)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RunError, match="is a file, not a folder"):
        run_training(tiny_settings(data, tmp_path / "a-file"))


def test_bad_data_deletes_and_writes_nothing(tmp_path):
    """--force with a --data that fails its check keeps the old run; a new run folder gets no settings.json."""
    from train.data import DataError
    from train.run import run_training

    bad = tmp_path / "bad"
    (bad / "cats").mkdir(parents=True)
    (bad / "dogs").mkdir()
    old = _fake_run(tmp_path / "old")
    before = _snapshot(old)
    with pytest.raises(DataError):
        run_training(tiny_settings(bad, old), force=True)
    assert _snapshot(old) == before, "--force deleted a run before the data was checked"
    with pytest.raises(DataError):
        run_training(tiny_settings(bad, tmp_path / "new"))
    assert not (tmp_path / "new" / "settings.json").exists(), "a failed data check left settings.json behind"


def test_a_run_missing_its_model_is_not_complete(tmp_path):
    """export says "re-run train" for a missing model; train must then resume, not answer "already complete"."""
    from train.runfolder import previous_run
    from train.settings import resolve

    s = resolve(tiny_settings(tmp_path / "data", tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "settings.json").write_text(json.dumps(dict(s.to_dict(), settings_sha256=s.sha256())))
    for name in ("metrics.json", "model_float.keras", "model_qat.h5"):
        (tmp_path / "run" / name).write_text("{}")
    assert previous_run(s, force=False)
    (tmp_path / "run" / "metrics.json").write_text('{"test_top1')  # cut short: the run did not finish
    assert not previous_run(s, force=False)
    (tmp_path / "run" / "metrics.json").write_text("{}")
    (tmp_path / "run" / "model_float.keras").unlink()
    assert not previous_run(s, force=False)


def test_latest_is_replaced_only_when_it_is_our_link(tmp_path):
    from train.runfolder import link_latest

    a, b = _fake_run(tmp_path / "a"), _fake_run(tmp_path / "b")
    link_latest(a)
    link_latest(b)
    assert os.readlink(tmp_path / "latest") == "b"
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").write_text("my notes")
    said = []
    link_latest(a, said.append)
    assert (tmp_path / "latest").read_text() == "my notes" and "left as it is" in said[0]
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").mkdir()
    link_latest(a, said.append)  # was IsADirectoryError at the end of every run
    assert (tmp_path / "latest").is_dir() and not (tmp_path / "latest").is_symlink()


@pytest.mark.slow
def test_ctrl_c_while_qat_is_set_up_exits_130_with_the_resume_message(color_folder, tmp_path, monkeypatch, capsys):
    """TensorFlow turns a Ctrl-C inside its code into another error ("Concurrent access?"): still exit 130."""
    import train.qat

    def interrupted_inside_tensorflow(*a, **k):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            raise RuntimeError("Concurrent access?") from None

    monkeypatch.setattr(train.qat, "quantize_model", interrupted_inside_tensorflow)
    from train.run import run_training

    with pytest.raises(SystemExit) as e:
        run_training(tiny_settings(color_folder, tmp_path / "r", epochs=1, fine_tune_epochs=1, qat_epochs=1))
    assert e.value.code == 130
    assert "re-run the same command to resume" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "is not valid JSON"), ('["a", "list"]', "holds a JSON list"),
     ('{"image_size": "96"}', "image_size is '96', not an int"), ('{"val_split": 2}', "--val-split")],
)  # fmt: skip
def test_corrupt_settings_json_is_one_line_in_export(tmp_path, text, message):
    import subprocess
    import sys

    from conftest import REPO

    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(text)
    r = subprocess.run([sys.executable, "-m", "export", "--run", str(run)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "settings.json" in errors[0], r.stdout


def test_out_that_cannot_be_written_is_refused_before_any_data(tmp_path):
    from train.run import RunError, run_training

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RunError, match=r"cannot be written \(.*notes.txt is a file\)"):
        run_training(tiny_settings(tmp_path / "no-such-data", tmp_path / "notes.txt" / "run"))


@pytest.mark.parametrize("text", ["{cut", '{"splits": {}}', '{"splits": {"test": {"labels": [0, 1], "paths": ["a"]}}}'])
def test_damaged_splits_json_is_one_line(tmp_path, text):
    """export and benchmarks read the test split through load_split: a damaged splits.json is one DataError."""
    from train.data import DataError, load_split
    from train.settings import resolve

    run = tmp_path / "run"
    run.mkdir()
    s = resolve(tiny_settings(tmp_path / "data", run))
    (run / "settings.json").write_text(json.dumps(dict(s.to_dict(), settings_sha256=s.sha256())))
    (run / "splits.json").write_text(text)
    with pytest.raises(DataError, match="splits.json is damaged") as e:
        load_split(run, "test")
    assert "\n" not in str(e.value)
