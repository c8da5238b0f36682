"""deploy.bundle: what goes into NAME-edge.tar.gz, which model it picks, and that it installs and runs on its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

import pytest
from edge_model import REPO, SAMPLES, TF_MODULES, import_blocker, read_labels_csv

from contracts.manifest import load_manifest, sha256_file, verify_checksum
from deploy.bundle import main as bundle_main


def _bundle(run, out, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.bundle", "--run", str(run), "--out", str(out), *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip


def _extract(tarball, dest):
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
    return dest / tarball.name.removesuffix(".tar.gz")


def _with_qat(edge_run, tmp_path):
    """A copy of the run whose manifest also lists a tflite_int8_qat artifact (a copy of the int8 one)."""
    run = tmp_path / "qat-run"
    shutil.copytree(edge_run, run)
    shutil.copy(run / "export" / "tflite_int8.tflite", run / "export" / "tflite_int8_qat.tflite")
    d = json.loads((run / "export" / "manifest.json").read_text())
    qat = dict(next(a for a in d["artifacts"] if a["format"] == "tflite_int8"), format="tflite_int8_qat",
               file="tflite_int8_qat.tflite", source_model="qat")  # fmt: skip
    d["artifacts"].append(qat)
    (run / "export" / "manifest.json").write_text(json.dumps(d))
    return run


def test_bundle_contents(edge_run, tmp_path):
    p = _bundle(edge_run, tmp_path / "dist")
    assert p.returncode == 0, p.stderr
    tarball = tmp_path / "dist" / "tiny-rgb-edge.tar.gz"
    assert os.listdir(tmp_path / "dist") == [tarball.name]  # nothing partial left beside it
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
    top = "tiny-rgb-edge/"
    assert all(n.startswith(top) or n == top[:-1] for n in members)
    # What the Pi runs, whole packages found here independently of deploy.bundle: no hand-kept list to forget a file.
    found = [p for d in ("contracts", "edge", "benchmarks/device") for p in (REPO / d).rglob("*.py")]
    sources = {"benchmarks/__init__.py"} | {
        p.relative_to(REPO).as_posix() for p in found if "__pycache__" not in p.parts
    }
    assert {"edge/frames.py", "benchmarks/device/soak.py", "contracts/runners/litert.py"} <= sources
    rest = {"install.sh", "edge-classifier.service", "README.md", "requirements-edge.txt",
            "requirements-edge-armv7.txt", "model/manifest.json", "model/tflite_int8.tflite"}  # fmt: skip
    assert {n.removeprefix(top) for n, m in members.items() if m.isfile()} == sources | rest  # one artifact only
    assert members[top + "install.sh"].mode & 0o111

    root = _extract(tarball, tmp_path / "x")
    assert (root / "requirements-edge.txt").read_bytes() == (REPO / "requirements" / "edge.txt").read_bytes()
    assert (root / "requirements-edge-armv7.txt").read_bytes() == (REPO / "requirements/edge-armv7.txt").read_bytes()
    m = load_manifest(root / "model")
    assert m.formats == ["tflite_int8"] and m.labels == ["red", "green", "blue"]
    verify_checksum(root / "model" / "tflite_int8.tflite", m.entry("tflite_int8"))
    assert sha256_file(root / "model" / "tflite_int8.tflite") == sha256_file(edge_run / "export" / "tflite_int8.tflite")
    for f in sources:
        assert (root / f).read_bytes() == (REPO / f).read_bytes(), f

    unit = (root / "edge-classifier.service").read_text()
    assert "Restart=always" in unit and "Environment=EDGE_SOURCE=0" in unit
    assert "-m edge --headless --model model/tflite_int8.tflite --source ${EDGE_SOURCE}" in unit
    assert "@@" not in unit and "@@" not in (root / "README.md").read_text()
    install = (root / "install.sh").read_text()
    assert "uname -m" in install and "requirements-edge.txt" in install and "armv7l" in install
    assert subprocess.run(["bash", "-n", str(root / "install.sh")]).returncode == 0  # it parses


def test_extracted_bundle_runs_without_tensorflow(edge_run, tmp_path):
    assert _bundle(edge_run, tmp_path / "dist").returncode == 0
    root = _extract(tmp_path / "dist" / "tiny-rgb-edge.tar.gz", tmp_path / "pi")
    env = import_blocker(tmp_path / "site", TF_MODULES, tmp_path / "attempts.log")
    env["PYTHONPATH"] = str(tmp_path / "site")  # not the repository: only the bundle's edge/ is importable
    cmd = [sys.executable, "-m", "edge", "--model", "model/tflite_int8.tflite", "--source", str(SAMPLES), "--headless"]
    p = subprocess.run(cmd, cwd=root, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "attempts.log").exists()
    truth = read_labels_csv(SAMPLES / "labels.csv")
    assert [json.loads(line)["label"] for line in p.stdout.splitlines()] == [truth[n] for n in sorted(truth)]


def test_default_format_prefers_qat_then_int8(edge_run, tmp_path):
    assert _bundle(_with_qat(edge_run, tmp_path), tmp_path / "a").returncode == 0
    with tarfile.open(tmp_path / "a" / "qat-run-edge.tar.gz") as tar:
        names = tar.getnames()
    assert "qat-run-edge/model/tflite_int8_qat.tflite" in names and not any("int8.tflite" in n for n in names)

    assert _bundle(edge_run, tmp_path / "b", "--format", "onnx_fp32").returncode == 0
    root = _extract(tmp_path / "b" / "tiny-rgb-edge.tar.gz", tmp_path / "bx")
    assert load_manifest(root / "model").formats == ["onnx_fp32"]
    assert "--model model/onnx_fp32.onnx" in (root / "edge-classifier.service").read_text()


@pytest.mark.parametrize(
    ("fmt", "message"), [("tflite_fp16", "has no tflite_fp16 artifact"), ("tflite_int9", "unknown")]
)
def test_absent_or_unknown_format(edge_run, tmp_path, capsys, fmt, message):
    assert bundle_main(["--run", str(edge_run), "--format", fmt, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "tflite_fp32, tflite_int8, onnx_fp32" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_corrupt_artifact_is_not_bundled(edge_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(edge_run, run)
    (run / "export" / "tflite_int8.tflite").write_bytes(b"not a model")
    assert bundle_main(["--run", str(run), "--out", str(tmp_path / "dist")]) == 2
    assert "tflite_int8.tflite does not match its manifest" in capsys.readouterr().err
    assert not (tmp_path / "dist" / "run-edge.tar.gz").exists()


@pytest.mark.slow
def test_bundle_installs_in_a_fresh_venv_and_classifies(edge_run, tmp_path):
    """install.sh on this x86_64 machine: python -m venv + pip install -r requirements-edge.txt, nothing else."""
    assert _bundle(edge_run, tmp_path / "dist").returncode == 0
    root = _extract(tmp_path / "dist" / "tiny-rgb-edge.tar.gz", tmp_path / "pi")
    python = getattr(sys, "_base_executable", sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # --service --serve as a user types it; systemd's side is a stand-in that logs its calls, and the unit and its
    # settings go to tmp_path instead of /etc (UNIT_DIR, DEFAULTS)
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    for tool, body in (("systemctl", 'echo "$@" >> "$(dirname "$0")/systemctl.log"'), ("sudo", 'exec "$@"')):
        (fake / tool).write_text(f"#!/bin/sh\n{body}\n")
        (fake / tool).chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    etc = {"UNIT_DIR": str(tmp_path), "DEFAULTS": str(tmp_path / "edge-classifier"), "PATH": f"{fake}:{env['PATH']}"}
    install = ["bash", "install.sh", "--service", "--serve", f"127.0.0.1:{port}", "--source", str(SAMPLES)]
    p = subprocess.run(install, cwd=root, env={**env, **etc, "PYTHON": python}, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "edge runtime ready" in p.stdout
    _check_service_with_live_view(root, tmp_path, fake, port, p.stdout, env)
    venv_python = root / ".venv" / "bin" / "python"
    freeze = subprocess.run([str(venv_python), "-m", "pip", "freeze"], capture_output=True, text=True).stdout.lower()
    assert "tensorflow" not in freeze and "keras" not in freeze and "onnxruntime" not in freeze
    assert "ai-edge-litert==2.3.0" in freeze and "opencv-python-headless==" in freeze
    cmd = [
        str(venv_python),
        "-m",
        "edge",
        "--model",
        "model/tflite_int8.tflite",
        "--source",
        str(SAMPLES),
        "--headless",
    ]
    p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    truth = read_labels_csv(SAMPLES / "labels.csv")
    assert [json.loads(line)["label"] for line in p.stdout.splitlines()] == [truth[n] for n in sorted(truth)]
    # The device-side benchmark runs from the bundle too, with nothing but the edge requirements.
    cmd = [str(venv_python), "-m", "benchmarks.device.latency", "--model", "model/tflite_int8.tflite", "--threads", "1",
           "--runs", "5", "--warmup", "1", "--device-name", "pi-test", "--out", "rows.json"]  # fmt: skip
    p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = json.loads((root / "rows.json").read_text())["rows"]
    assert rows and all(r["device"] == "pi-test" and r["latency_ms_median"] > 0 for r in rows)


def _check_service_with_live_view(root, tmp_path, fake, port, install_out, env) -> None:
    """What install.sh --service --serve set up: the unit, its settings (the token root-only), and the service's own
    command line serving the live view behind that token."""
    assert "enable edge-classifier.service" in (fake / "systemctl.log").read_text()
    defaults = tmp_path / "edge-classifier"
    settings = dict(line.split("=", 1) for line in defaults.read_text().splitlines())
    token = settings["EDGE_SERVE_TOKEN"]
    assert settings["EDGE_SERVE_ARGS"] == f'"--serve 127.0.0.1:{port}"' and len(token) >= 16
    assert defaults.stat().st_mode & 0o077 == 0  # the token is readable by root only
    assert f"live view: http://127.0.0.1:{port}/?token={token}" in install_out
    unit = (tmp_path / "edge-classifier.service").read_text()
    assert f"EnvironmentFile=-{defaults}" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart=")).removeprefix("ExecStart=")
    # The service's command as systemd runs it (its settings file as environment), looping the pictures
    defaults.write_text(
        defaults.read_text().replace('EDGE_ARGS="--print-every 30"', 'EDGE_ARGS="--loop --print-every 30"')
    )
    script = f"set -a; . {defaults}; set +a; exec {exec_start}"
    proc = subprocess.Popen(["bash", "-c", script], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for line in proc.stderr:
            if "live view:" in line:
                break
        base = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "latest.json", timeout=10)
        assert refused.value.code == 401
        for _ in range(50):  # 503 until the first frame
            try:
                health = json.load(urllib.request.urlopen(f"{base}health?token={token}", timeout=10))
                break
            except urllib.error.HTTPError as e:
                assert e.code == 503
        assert health["ok"] and health["model"] == "tflite_int8.tflite"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


@pytest.mark.slow
def test_armv7_requirements_run_the_bundle(edge_run, tmp_path):
    """requirements-edge-armv7.txt (tflite-runtime, numpy 1.26, OpenCV 4) on this machine: the same labels, and the
    tflite_runtime fallback is what runs (32-bit Pi OS has no ai-edge-litert)."""
    assert _bundle(edge_run, tmp_path / "dist").returncode == 0
    root = _extract(tmp_path / "dist" / "tiny-rgb-edge.tar.gz", tmp_path / "pi")
    python = getattr(sys, "_base_executable", sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([python, "-m", "venv", str(root / ".venv")], check=True, timeout=120)
    venv_python = str(root / ".venv" / "bin" / "python")
    pip = [venv_python, "-m", "pip", "install", "-q", "-r", "requirements-edge-armv7.txt"]
    p = subprocess.run(pip, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    cmd = [venv_python, "-m", "edge", "--model", "model/tflite_int8.tflite", "--source", str(SAMPLES), "--headless"]
    p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "on litert (tflite_runtime)" in p.stderr
    truth = read_labels_csv(SAMPLES / "labels.csv")
    assert [json.loads(line)["label"] for line in p.stdout.splitlines()] == [truth[n] for n in sorted(truth)]
