#!/usr/bin/env bash
# The edge bundle on the Raspberry Pi's architecture (arm64 Debian bookworm under qemu): installed from its own
# requirements, it must give the same labels as on this x86_64 machine, on committed pictures and on a video.
#
#   bash tests/pi/run-pi-test.sh            # `make test-pi`; needs root (chroot, mounts, binfmt) and apt/PyPI access
#
# A correctness check only: emulated timings mean nothing. Env: PYTHON (host interpreter with the training stack,
# default .venv/bin/python), ROOT (emulated root, default /tmp/pi-emu/rootfs), PI=4|5 (CPU to emulate),
# KEEP=1 (keep the work folder), PI_EMU (the folder with make-rootfs.sh and run.sh).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
t0=$(date +%s)
say() { echo "pi-test [$(( $(date +%s) - t0 )) s]: $*"; }

if [ -z "${PI_EMU:-}" ]; then  # shared/ sits beside the checkout (also for a fresh clone next to it), or at /work
  for d in "$REPO/../shared/pi-emu" /work/shared/pi-emu; do
    if [ -f "$d/run.sh" ]; then PI_EMU=$(cd "$d" && pwd); break; fi
  done
fi
[ -n "$PI_EMU" ] || { echo "pi-test: no pi-emu found at $REPO/../shared/pi-emu or /work/shared/pi-emu; set PI_EMU" >&2; exit 2; }
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || { echo "pi-test: $PYTHON not found: run \`make setup\` or set PYTHON" >&2; exit 2; }
export ROOT=${ROOT:-/tmp/pi-emu/rootfs}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

WORK=$(mktemp -d /tmp/pi-test.XXXXXX)
cleanup() {
  $SUDO env ROOT="$ROOT" bash "$PI_EMU/run.sh" --umount || true
  if [ "${KEEP:-0}" = 1 ]; then echo "pi-test: work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

say "emulated arm64 root at $ROOT (pi-emu: $PI_EMU)"
$SUDO bash "$PI_EMU/make-rootfs.sh" "$ROOT"

say "training the tiny test model and bundling it (int8 and fp32)"
cd "$REPO"
PYTHONPATH="$REPO" TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" tests/edge_model.py --out "$WORK/runs" > /dev/null 2> "$WORK/build.log" \
  || { cat "$WORK/build.log" >&2; exit 1; }
for fmt in tflite_int8 tflite_fp32; do
  "$PYTHON" -m deploy.bundle --run "$WORK/runs/tiny-rgb" --format "$fmt" --out "$WORK/dist/$fmt" > /dev/null
done
mkdir -p "$WORK/pi"
tar xzf "$WORK/dist/tflite_int8/tiny-rgb-edge.tar.gz" -C "$WORK/pi"
B=$WORK/pi/tiny-rgb-edge
tar xzf "$WORK/dist/tflite_fp32/tiny-rgb-edge.tar.gz" -C "$WORK" && mv "$WORK/tiny-rgb-edge/model" "$B/model-fp32"
mkdir -p "$B/data" "$B/out"
cp -r tests/data/edge/images "$B/data/images"
PYTHONPATH="$REPO/tests:$REPO" "$PYTHON" -c "
import cv2, numpy as np
from pathlib import Path
from edge_model import write_video
paths = sorted(Path('$B/data/images').glob('*.png'))
frames = np.stack([cv2.imread(str(p)) for p in paths for _ in range(3)])  # each picture for 3 frames
write_video('$B/data/clip.avi', frames)"

run_all() {  # $1: where the outputs go (x86 or arm); the rest: how to run python in the bundle folder
  local tag=$1; shift
  for m in model/tflite_int8.tflite model-fp32/tflite_fp32.tflite; do
    local name; name=$(basename "$m" .tflite)
    for src in data/images data/clip.avi; do
      local kind; kind=$(basename "$src" | cut -d. -f1)
      "$@" -m edge --headless --model "$m" --source "$src" > "$B/out/$tag-$name-$kind.jsonl" 2> "$B/out/$tag-$name-$kind.log" \
        || { echo "pi-test: $tag $name $kind failed:" >&2; cat "$B/out/$tag-$name-$kind.log" >&2; exit 1; }
    done
  done
}

say "reference run on $(uname -m)"
(cd "$B" && run_all x86 "$PYTHON")

# A fresh venv each time, so the install from the bundle's requirements really happens (pip's cache makes
# later runs quicker); PATH puts it first inside, so `python` and `pip` below are the Pi's.
VENV=/opt/edge-pi-test
pi_run() { $SUDO env ROOT="$ROOT" HOSTDIR="$B" PI="${PI:-4}" bash "$PI_EMU/run.sh" env PATH="$VENV/bin:/usr/bin:/bin" "$@"; }
say "installing the bundle's requirements-edge.txt in a fresh venv in the emulated Pi (under qemu: about a minute)"
pi_run sh -c "rm -rf $VENV && python3 -m venv $VENV"
pi_run pip install --disable-pip-version-check -q -r /mnt/x/requirements-edge.txt
pi_run sh -c 'echo "pi-test: inside: $(uname -m), $(python --version), $(command -v python)"; pip freeze | tr "\n" " "; echo' \
  | tee "$B/out/arm-env.txt"
if grep -qiE "tensorflow|keras" "$B/out/arm-env.txt"; then echo "pi-test: TensorFlow in the Pi venv" >&2; exit 1; fi

say "classifying on emulated arm64"
cat > "$B/out/run-arm.sh" <<'EOF'
set -e
cd /mnt/x
for m in model/tflite_int8.tflite model-fp32/tflite_fp32.tflite; do
  name=$(basename "$m" .tflite)
  for src in data/images data/clip.avi; do
    kind=$(basename "$src" | cut -d. -f1)
    python -m edge --headless --model "$m" --source "$src" > "out/arm-$name-$kind.jsonl" 2> "out/arm-$name-$kind.log" \
      || { echo "pi-test: arm $name $kind failed:"; cat "out/arm-$name-$kind.log"; exit 1; }
  done
done
EOF
pi_run bash /mnt/x/out/run-arm.sh

say "live view and photo collection on emulated arm64 (stdlib server, nothing more to install)"
cat > "$B/out/serve-arm.py" <<'EOF'
import json, pathlib, subprocess, sys, time, urllib.request
port, token = 18777, "pi-test-token"
proc = subprocess.Popen([sys.executable, "-m", "edge", "--headless", "--loop", "--print-every", "1000", "--model",
                         "model/tflite_int8.tflite", "--source", "data/images", "--serve", f"127.0.0.1:{port}",
                         "--serve-token", token], stdout=subprocess.DEVNULL, stderr=open("out/arm-serve.log", "w"))
try:
    base, head = f"http://127.0.0.1:{port}/", {"Authorization": f"Bearer {token}"}
    get = lambda path: urllib.request.urlopen(urllib.request.Request(base + path, headers=head), timeout=30)
    for _ in range(120):  # qemu: the model loads slowly
        try:
            health = json.load(get("health"))
            break
        except OSError:
            time.sleep(1)
    else:
        sys.exit("pi-test: the live view never answered /health; see out/arm-serve.log")
    with get("video.mjpg") as video:
        head_bytes = video.read(4096)
    assert health["ok"] and b"Content-Type: image/jpeg" in head_bytes, (health, head_bytes[:200])
    assert json.load(get("latest.json"))["label"], "no label in /latest.json"
    print("pi-test: live view on arm64:", json.dumps({k: health[k] for k in ("ok", "model", "frames")}))
finally:
    proc.terminate()
    assert proc.wait(60) == 0, open("out/arm-serve.log").read()
out = subprocess.run([sys.executable, "-m", "edge.collect", "--headless", "--source", "data/clip.avi", "--out",
                      "out/photos", "--label", "seen", "--every", "0", "--count", "5"], capture_output=True, text=True)
assert out.returncode == 0, out.stderr
saved = sorted(pathlib.Path("out/photos/seen").glob("*.jpg"))
assert len(saved) == 5, (saved, out.stderr)
print("pi-test: edge.collect on arm64 saved", len(saved), "photos")
EOF
pi_run sh -c "cd /mnt/x && python out/serve-arm.py"

say "comparing"
"$PYTHON" "$REPO/tests/pi/compare.py" "$B/out" "$B/data/images/labels.csv"
say "done"
