# The menu. Every target installs what it needs (into .venv) first; `make help` lists them.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
RUN     ?= runs/latest
# `make train ARGS="--data path/to/folder"`, `make export ARGS="--formats tflite_int8"`, ...
ARGS    ?=
# `make edge SOURCE=0` (camera index), a video, an image folder, an RTSP URL, or picamera
SOURCE  ?= 0
# `make edge FORMAT=onnx_fp32`, `make bundle FORMAT=tflite_int8`; default: the best the manifest lists in the
# formats table's bundle preference (QAT int8 if it passed the gate, else int8 PTQ, else fp32)
FORMAT  ?=
# `make collect OUT=photos ARGS="--labels cat,dog"`: training photos from SOURCE, one folder per class
OUT     ?= photos
PYTEST  ?= -q
# pytest-xdist: tests run in parallel processes, one per core (at most 4), a test file per process at a time, the
# longest files first (tests/conftest.LONGEST_FIRST); the trained fixtures are built once per run and shared
# (tests/conftest.once_per_run). `make test XDIST=` runs everything in one process.
XDIST   ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

.PHONY: help setup train export bench sweep edge collect bundle test test-fast test-pi lint format clean

help:
	@echo "make setup    create .venv with the pinned training + edge stack (idempotent)"
	@echo "make train    train on the bundled digits (offline): runs/latest   [ARGS='--data DIR ...']"
	@echo "make export   TFLite + ONNX artifacts, parity-checked, with manifest: runs/latest/export"
	@echo "make bench    accuracy vs latency for every artifact: runs/latest/bench"
	@echo "make sweep    widths x input sizes, the best model within a latency budget"
	@echo "make edge     camera classifier, best model of the manifest  [FORMAT=...] [SOURCE=0|video.mp4|images/|rtsp://...|picamera]"
	@echo "make collect  training photos from the camera into OUT/<label>/  [OUT=photos ARGS='--labels cat,dog']"
	@echo "make bundle   dist/NAME-edge.tar.gz for a Raspberry Pi        [FORMAT=tflite_int8]"
	@echo "make test     the test suite, in random order, on every core (what CI runs); make test-fast: nothing that trains, < 2 min"
	@echo "make lint     ruff check + format check"

$(BIN)/.stamp: requirements/*.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements/dev.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import tensorflow, tf_keras, tensorflow_model_optimization, tf2onnx, onnxruntime, ai_edge_litert, cv2"
	touch $@

setup: $(BIN)/.stamp

train: setup
	$(BIN)/python -m train $(ARGS)

export: setup
	$(BIN)/python -m export --run $(RUN) $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks --run $(RUN) $(ARGS)

sweep: setup
	$(BIN)/python -m sweep $(ARGS)

edge: setup
	MODEL=$$($(BIN)/python -m contracts.manifest --pick $(RUN)/export $(if $(FORMAT),--format $(FORMAT))) && \
	  $(BIN)/python -m edge --model "$$MODEL" --source $(SOURCE) $(ARGS)

collect: setup
	$(BIN)/python -m edge.collect --source $(SOURCE) --out $(OUT) $(ARGS)

bundle: setup
	$(BIN)/python -m deploy.bundle --run $(RUN) $(if $(FORMAT),--format $(FORMAT)) $(ARGS)

test: setup
	$(BIN)/python -m pytest $(XDIST) $(PYTEST)

test-fast: setup
	$(BIN)/python -m pytest $(XDIST) $(PYTEST) -m "not slow"

test-pi: setup
	bash tests/pi/run-pi-test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf dist .pytest_cache .ruff_cache
