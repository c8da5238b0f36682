"""Compares the edge classifier's JSON lines from emulated arm64 with those from x86_64 (run-pi-test.sh).

    python tests/pi/compare.py OUT_DIR LABELS_CSV      # exit 1 on any label that differs

Labels must be identical, frame for frame; scores may differ by a little. Float kernels differ across CPUs, and
so do a video's decoded pixels: on the MJPG clip, up to 2 levels in 60% of the values (JPEG decoders use per-CPU
SIMD code), which moved fp32 scores by 0.0009 against 0 on the PNG pictures; int8 scores were identical on both.
Pictures must also get their committed labels.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

MAX_SCORE_DIFF = {"images": 1e-4, "clip": 0.02}  # lossless pictures: same pixels; video: decoders may differ


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    out, labels_csv = map(Path, (argv or sys.argv[1:]))
    with open(labels_csv, newline="") as f:
        truth = {r["file"]: r["label"] for r in csv.DictReader(f)}
    failures, rows = [], []
    for x86_file in sorted(out.glob("x86-*.jsonl")):
        case = x86_file.name.removeprefix("x86-").removesuffix(".jsonl")
        arm_file = out / f"arm-{case}.jsonl"
        x86, arm = _read(x86_file), _read(arm_file) if arm_file.is_file() else []
        same = sum(a["label"] == b["label"] for a, b in zip(x86, arm))
        diff = max((abs(a["score"] - b["score"]) for a, b in zip(x86, arm)), default=float("nan"))
        right = [d["label"] == truth.get(d["source"]) for d in arm if d["source"] in truth]
        rows.append((case, len(x86), len(arm), same, diff, f"{sum(right)}/{len(right)}" if right else "-"))
        if not x86 or len(arm) != len(x86) or same != len(x86):
            failures.append(f"{case}: {same}/{len(x86)} labels agree ({len(arm)} arm64 lines)")
        elif not diff <= (limit := MAX_SCORE_DIFF[case.rsplit("-", 1)[-1]]):
            failures.append(f"{case}: scores differ by up to {diff:.2g} (> {limit})")
        if right and not all(right):
            failures.append(f"{case}: {len(right) - sum(right)} pictures lost their committed label on arm64")
    print(f"{'case':<26}{'x86 lines':>10}{'arm lines':>10}{'same label':>11}{'max |dscore|':>14}{'truth':>8}")
    for case, nx, na, same, diff, right in rows:
        print(f"{case:<26}{nx:>10}{na:>10}{same:>11}{diff:>14.2g}{right:>8}")
    if not rows:
        failures.append(f"no x86-*.jsonl in {out}")
    for f in failures:
        print(f"pi-test: FAIL {f}", file=sys.stderr)
    print("pi-test: arm64 and x86_64 agree" if not failures else "pi-test: arm64 and x86_64 DISAGREE")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
