#!/usr/bin/env bash
# Installs the @@RUN@@ edge classifier from this bundle: Raspberry Pi OS 64-bit (aarch64) or 32-bit (armv7l),
# or any Debian-like x86_64 machine.
#
#   ./install.sh                         # ./.venv with the pinned runtime (numpy, OpenCV, LiteRT)
#   ./install.sh --service [--source 0]  # ... and the systemd unit edge-classifier.service (needs sudo)
#   ./install.sh --service --serve 8080  # ... with the live view on port 8080 of every address (LAN), behind a
#                                        #     token kept in /etc/default/edge-classifier (127.0.0.1:8080: local only)
#   ./install.sh --picamera              # ... able to use the Pi camera (--source picamera) via apt's picamera2
#   ./install.sh --gui                   # ... with the OpenCV build that opens windows (Pi OS with a desktop)
#   ./install.sh --pip | --apt           # force a route (default: pip on 64-bit, apt on 32-bit Pi OS)
#
# Routes. pip: a plain venv + `pip install -r requirements-edge.txt` (aarch64, x86_64), or
# requirements-edge-armv7.txt (armv7l: tflite-runtime, which needs numpy<2 and so OpenCV 4).
# apt: numpy and OpenCV from apt (python3-numpy, python3-opencv), a venv with --system-site-packages, and only
# the interpreter from pip (ai-edge-litert, or tflite-runtime on armv7l). picamera2 exists only as an apt
# package built against apt's numpy, so --picamera takes the apt route.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$HERE/.venv}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}  # where --service puts the unit, and its settings file (tests move them)
DEFAULTS=${DEFAULTS:-/etc/default/edge-classifier}
SERVICE=0 PICAMERA=0 GUI=0 ROUTE=auto SOURCE=0 SERVE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --service) SERVICE=1 ;;
    --picamera) PICAMERA=1 ;;
    --gui) GUI=1 ;;
    --pip) ROUTE=pip ;;
    --apt) ROUTE=apt ;;
    --source) SOURCE=${2:?--source needs a value}; shift ;;
    --serve) SERVE=${2:?--serve needs a port or HOST:PORT}; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see ./install.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$SERVE" ]; then
  [ "$SERVICE" = 1 ] || { echo "install.sh: --serve configures the service: add --service" >&2; exit 2; }
  case "$SERVE" in
    *:*) serve_host=${SERVE%:*} serve_port=${SERVE##*:} ;;
    *) serve_host=0.0.0.0 serve_port=$SERVE ;;  # a port alone: watched from another machine, so every address
  esac
  case "$serve_port" in
    ''|*[!0-9]*) echo "install.sh: --serve $SERVE: expected a port (8080) or HOST:PORT (127.0.0.1:8080)" >&2; exit 2 ;;
  esac
  if [ "$serve_port" -lt 1024 ] || [ "$serve_port" -gt 65535 ]; then
    echo "install.sh: --serve $SERVE: pick a port from 1024 to 65535 (the service does not run as root)" >&2; exit 2
  fi
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
apt_install() { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; }

arch=$(uname -m)
case "$arch" in
  aarch64|arm64|x86_64) reqs=requirements-edge.txt; interpreter=ai-edge-litert ;;
  armv7l|armv6l) reqs=requirements-edge-armv7.txt; interpreter=tflite-runtime ;;
  *) echo "install.sh: no edge runtime for $arch (need aarch64, armv7l or x86_64)" >&2; exit 1 ;;
esac
if [ "$ROUTE" = auto ]; then
  ROUTE=pip
  if { [ "$interpreter" = tflite-runtime ] || [ "$PICAMERA" = 1 ]; } && command -v apt-get >/dev/null; then ROUTE=apt; fi
fi
echo "install.sh: $arch, $ROUTE route, venv $VENV"

site=() constraints=()
if [ "$ROUTE" = apt ]; then
  pkgs=(python3-venv python3-numpy python3-opencv)
  if [ "$PICAMERA" = 1 ]; then pkgs+=(python3-picamera2); fi
  apt_install "${pkgs[@]}"
  site=(--system-site-packages)
  grep -E "^$interpreter==" "$reqs" > "$TMP/requirements-interpreter.txt"
  reqs=$TMP/requirements-interpreter.txt
elif [ "$PICAMERA" = 1 ]; then
  echo "install.sh: --picamera needs the apt route (picamera2 is an apt package); drop --pip" >&2; exit 2
fi

"$PYTHON" -m venv "${site[@]}" "$VENV" \
  || { echo "install.sh: cannot make a venv; on Debian/Pi OS: sudo apt install python3-venv" >&2; exit 1; }
if [ "$ROUTE" = apt ]; then
  # apt's OpenCV and picamera2 are built against apt's numpy (the venv sees it): pip must not install another
  # over it (ai-edge-litert's ml_dtypes would pull numpy 2), so it picks dependency versions that fit instead.
  "$VENV/bin/python" -c "import numpy; print('numpy==' + numpy.__version__)" > "$TMP/constraints.txt"
  constraints=(-c "$TMP/constraints.txt")
fi
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$reqs" "${constraints[@]}"; then
  if [ "$interpreter" = tflite-runtime ]; then
    # Checked on PyPI: its last armv7l tflite-runtime wheel is 2.5.0 for Python 3.7; Pi OS adds piwheels as an
    # extra index, which may or may not carry one for this Python.
    echo "install.sh: no tflite-runtime wheel for $arch and $("$PYTHON" --version 2>&1) was found. Use 64-bit" \
         "Raspberry Pi OS (recommended: ai-edge-litert, XNNPACK), or install an armv7l tflite-runtime wheel" \
         "into $VENV yourself and run ./install.sh again." >&2
  fi
  exit 1
fi
if [ "$GUI" = 1 ] && [ "$ROUTE" = pip ]; then  # same OpenCV version, built with windows (apt's one has them)
  cv=$("$VENV/bin/python" -c "from importlib.metadata import version; print(version('opencv-python-headless'))")
  "$VENV/bin/python" -m pip uninstall --disable-pip-version-check -q -y opencv-python-headless
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "opencv-python==$cv"
fi
"$VENV/bin/python" -c "
import cv2, numpy
from contracts.runners.litert import load_litert_interpreter
load_litert_interpreter()
print('install.sh: edge runtime ready: numpy', numpy.__version__, 'OpenCV', cv2.__version__)"
echo "install.sh: try it: $VENV/bin/python -m edge --model @@MODEL@@ --source 0 --headless --max-frames 10"

if [ "$SERVICE" = 1 ]; then
  user=${SUDO_USER:-$(id -un)}
  sed -e "s|@DIR@|$HERE|g" -e "s|@USER@|$user|g" -e "s|/etc/default/edge-classifier|$DEFAULTS|g" edge-classifier.service \
    | $SUDO tee "$UNIT_DIR/edge-classifier.service" >/dev/null
  defaults=$DEFAULTS
  if [ ! -f "$defaults" ]; then
    printf 'EDGE_SOURCE=%s\nEDGE_ARGS="--print-every 30"\n' "$SOURCE" | $SUDO tee "$defaults" >/dev/null
  fi
  if [ -n "$SERVE" ]; then
    # The token stays in the settings file (root only), not on the command line where `ps` would show it; a
    # reinstall keeps the token it had, so bookmarked links still work.
    token=$($SUDO sed -n 's/^EDGE_SERVE_TOKEN=//p' "$defaults" | tail -n 1)
    [ -n "$token" ] || token=$("$VENV/bin/python" -c "import secrets; print(secrets.token_urlsafe(16))")
    { $SUDO grep -v -e '^EDGE_SERVE_ARGS=' -e '^EDGE_SERVE_TOKEN=' "$defaults" || true
      printf 'EDGE_SERVE_ARGS="--serve %s:%s"\nEDGE_SERVE_TOKEN=%s\n' "$serve_host" "$serve_port" "$token"
    } > "$TMP/defaults"
    $SUDO install -m 600 "$TMP/defaults" "$defaults"
  fi
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable edge-classifier.service
  $SUDO systemctl restart edge-classifier.service  # a reinstall picks up the new unit and settings
  echo "install.sh: service edge-classifier is running as $user; logs: journalctl -u edge-classifier -f;" \
       "settings: $defaults"
  if [ -n "$SERVE" ]; then
    case "$serve_host" in
      0.0.0.0|::) where=$(hostname -I 2>/dev/null | awk '{print $1}'); where=${where:-$(hostname)} ;;
      *) where=$serve_host ;;
    esac
    echo "install.sh: live view: http://$where:$serve_port/?token=$token (the token is in $defaults)"
  fi
fi
