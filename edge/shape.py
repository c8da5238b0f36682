"""The loop's shape: a file read on the loop's own thread (serial), or on threads beside it, chosen from what each
stage costs here. edge.reader.FrameReader asks a ShapeChooser after each frame.

    choose_shape(StageCosts(decode_ms=1.0, prepare_ms=0.3, loop_ms=0.1), cores=4)   # "trial": too close to call
    choose_shape(StageCosts(decode_ms=10.0, prepare_ms=0.5, loop_ms=20.0), cores=4)  # "threads"

A pipeline (reader thread decodes, preparer thread preprocesses, the loop's thread infers and draws) runs at the
pace of its slowest stage instead of the sum of all three, but every frame handed from thread to thread costs a
wake-up, and the stages share the cores (and the GIL between OpenCV's and the interpreter's calls). Where inference
takes well under a millisecond, that costs more than it hides: the pipeline ran at 0.8-0.9x the frame rate of the
TensorFlow Raspberry Pi example's serial loop (read, resize, invoke, draw on one thread) there (issue 15). Where
inference dominates, the pipeline wins. So a file starts serial; its first frames measure the stages; the costs
decide where the answer is clear, and where it is not, short runs on threads are timed in turns with serial ones
and the faster shape kept, re-checked after 500, 1000, 2000 ... frames (a shared machine's load changes).

Live sources always have a reader thread: only it keeps the newest frame (no lag) and reconnects without stalling
the loop.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("edge")

SERIAL, THREADS = "serial", "threads"
PROBE_WARMUP = 3  # first frames not timed: the interpreter's first calls pack weights and fill caches
PROBE = 20  # serial frames timed before deciding from the costs (about 20 ms for a small model: cheap)
ROUNDS = 4  # a trial: this many rounds of SETTLE + WINDOW frames serially, then SETTLE + WINDOW on threads
WINDOW = 16  # frames timed per shape and round: threaded frames come unevenly (0.4 to 3 ms apart for a 1.5 ms
#   average), so fewer would not tell a 20% difference apart
EARLY = 0.15  # ... but after 2 rounds, a difference this large (either way) ends the trial, as do threads behind
#   after the first: every switch costs a few slow frames, which a 300-frame video notices
SETTLE = 4  # frames after a switch not timed: the pipeline fills, FFmpeg's decode-ahead catches up (2-4x slower)
FIRST_RECHECK, LAST_RECHECK = 500, 8000  # frames before a close call is re-checked; doubles each time up to this
HOP_MS = (0.05, 0.5)  # what handing a frame to another thread costs, at best and at worst. Best: a wake-up and a
#   queue put and get, 0.01-0.015 ms on a 2-core x86 VM (a ping-pong through Handoff), a few times that on a Pi's
#   cores. Worst: the woken thread waits for a core the interpreter holds, or for the GIL
MARGIN = 0.05  # threads are kept only when this much faster: ties, and a trial's noise, go to the loop that uses
#   fewer threads (edge must never be slower than the one-thread loop)
CLEAR = 0.25  # ... and chosen without a trial when even at the worst hand-off cost they would be this much faster


@dataclass(frozen=True)
class StageCosts:
    """Milliseconds per frame of each stage, measured on the loop's thread (serial)."""

    decode_ms: float  # reading (decoding) a frame
    prepare_ms: float  # the model's preprocessing (0 without it)
    loop_ms: float  # the loop's own work between frames: inference, drawing, output

    @property
    def serial_ms(self) -> float:
        return self.decode_ms + self.prepare_ms + self.loop_ms

    def describe(self) -> str:
        prepare = f" + prepare {self.prepare_ms:.2f} ms" if self.prepare_ms else ""
        return f"decode {self.decode_ms:.2f} ms{prepare} + infer and draw {self.loop_ms:.2f} ms"


def threads_ms(costs: StageCosts, cores: int, hop_ms: float) -> float:
    """Predicted ms per frame on threads: the slowest stage, or all the work spread over the cores if that is more,
    plus a hand-off per thread boundary."""
    stages = [costs.decode_ms, costs.prepare_ms, costs.loop_ms]
    hops = 2 if costs.prepare_ms else 1
    return max(max(stages), costs.serial_ms / max(1, cores)) + hops * hop_ms


def choose_shape(costs: StageCosts, cores: int) -> str:
    """SERIAL where threads cannot win even at the best hand-off cost, THREADS where they win clearly even at the
    worst, else "trial" (time both)."""
    if threads_ms(costs, cores, HOP_MS[0]) >= costs.serial_ms * (1 - MARGIN):
        return SERIAL
    if threads_ms(costs, cores, HOP_MS[1]) <= costs.serial_ms * (1 - CLEAR):
        return THREADS
    return "trial"


def faster(serial_ms: float, threads_ms: float) -> str:
    """The shape to keep after timing both: threads only if faster by MARGIN."""
    return THREADS if threads_ms < serial_ms * (1 - MARGIN) else SERIAL


def usable_cores() -> int:
    """The cores this process may run on (a taskset or a container's cpuset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ShapeChooser:
    """Decides, from the timings a FrameReader feeds it, how a file is read: serially or on threads (for a run of
    frames, or until the end).

    The reader calls serial_frame() after each frame it read on the loop's thread, threads_frame() for each frame
    it handed over from its threads, and threads_ended() when a run of threaded frames is used up. Each of
    serial_frame() and threads_ended() answers what to do next: (SERIAL, None) go on serially; (THREADS, n) read
    the next n frames on threads (None: until the end).

    A trial alternates: ROUNDS times SETTLE + WINDOW frames serially, then as many on threads. On a shared
    machine the load drifts over seconds, so two long windows one after the other would compare two different
    machines; short windows in turns see the same drift.
    """

    def __init__(self, cores: int | None = None, report: Callable[[str], None] | None = None):
        self.cores = cores or usable_cores()
        self._report = report or log.info
        self.shape = SERIAL
        self.note = "serial (deciding)"  # what the last decision said, for logs and benchmark rows
        self.costs: StageCosts | None = None
        self._state = "probe"  # probe, then serial or threads for good, or trial-threads <-> trial-serial, then
        #   checked-serial or checked-threads, then trial again
        self._skip = PROBE_WARMUP
        self._serial: list[tuple[float, float, float]] = []  # (decode, prepare, loop) ms of recent serial frames
        self._threads: list[float] = []  # ms between frames of the current threaded run
        self._rounds: list[tuple[float, float]] = []  # trial: (serial, threads) ms a frame per round
        self._recheck = FIRST_RECHECK
        self._countdown = 0  # checked-serial: serial frames left before the next trial
        self._decided: str | None = None  # the last decision's shape: logged at info when it changes

    @property
    def deciding(self) -> bool:
        """True while the first frames are timed, or a trial runs."""
        return self._state in ("probe", "trial-serial", "trial-threads")

    def serial_frame(self, decode_ms: float, prepare_ms: float, loop_ms: float | None) -> tuple[str, int | None]:
        """One frame read serially (loop_ms: the loop's work since the previous frame; None for the first)."""
        if self._skip > 0 or loop_ms is None:
            self._skip = max(0, self._skip - 1)
            return SERIAL, None
        self._serial = (self._serial + [(decode_ms, prepare_ms, loop_ms)])[-PROBE:]
        if self._state == "probe" and len(self._serial) == PROBE:
            self.costs = StageCosts(*(statistics.median(s[i] for s in self._serial) for i in range(3)))
            choice = choose_shape(self.costs, self.cores)
            if choice == SERIAL:
                self._state = SERIAL
                return self._decide(SERIAL, f"serial ({self.costs.describe()}; threads would not help)")
            if choice == THREADS:
                self._state = THREADS
                predicted = threads_ms(self.costs, self.cores, HOP_MS[1])
                return self._decide(THREADS, f"threads ({self.costs.describe()} overlap: at most {predicted:.2f} ms "
                                             f"a frame instead of {self.costs.serial_ms:.2f})")  # fmt: skip
            self._rounds = []
            return self._threaded_window()
        if self._state == "trial-serial" and len(self._serial) >= WINDOW and self._countdown <= 1:
            return self._threaded_window()
        if self._state == "checked-serial" and self._countdown <= 1 and len(self._serial) >= WINDOW:
            self._rounds = []  # the re-check: a new trial, from the serial frames just read
            return self._threaded_window()
        self._countdown -= 1
        return SERIAL, None

    def threads_frame(self, interval_ms: float) -> None:
        """One frame handed over by the threads, `interval_ms` after the one before."""
        self._threads.append(interval_ms)

    def threads_ended(self) -> tuple[str, int | None]:
        """A threaded run's frames are used up: the next round of the trial, its verdict, or a re-check."""
        if self._state == "checked-threads":  # the re-check: a new trial, from a serial window
            self._state, self._rounds, self._countdown = "trial-serial", [], SETTLE + WINDOW
            return SERIAL, None
        # Plain means, not medians: a frame's cost is uneven for real (FFmpeg decodes ahead on threads of its own,
        # so a read is quick or not depending on what ran beside it, and threaded frames come two at once, then
        # none); dropping slow frames flattered whichever shape had the more uneven ones.
        serial_ms = statistics.fmean(sum(s) for s in self._serial[-WINDOW:])
        self._rounds.append((serial_ms, statistics.fmean(self._threads[SETTLE:] or self._threads)))
        serial_ms, measured = (statistics.fmean(r[i] for r in self._rounds) for i in range(2))
        # Threads must prove themselves: behind after the first round, they are not tried further (serial is
        # never slower than the one-thread loop; a threaded verdict must be sure). A re-check tries them again.
        behind = len(self._rounds) == 1 and faster(serial_ms, measured) == SERIAL
        clear = len(self._rounds) >= 2 and abs(measured / serial_ms - 1) >= EARLY
        if len(self._rounds) < ROUNDS and not (behind or clear):
            self._state, self._countdown = "trial-serial", SETTLE + WINDOW
            return SERIAL, None
        costs = f"{self.costs.describe()}; " if self.costs else ""
        run = self._recheck
        self._recheck = min(self._recheck * 2, LAST_RECHECK)
        if faster(serial_ms, measured) == THREADS:
            self._state = "checked-threads"
            return self._decide(THREADS, f"threads ({costs}measured {measured:.2f} ms a frame, serial "
                                         f"{serial_ms:.2f})", run)  # fmt: skip
        self._state, self._countdown = "checked-serial", run
        return self._decide(SERIAL, f"serial ({costs}measured {serial_ms:.2f} ms a frame, threads {measured:.2f}: "
                                    "threads would not help)")  # fmt: skip

    def _threaded_window(self) -> tuple[str, int | None]:
        self._state, self._threads, self.shape = "trial-threads", [], THREADS
        return THREADS, SETTLE + WINDOW

    def _decide(self, shape: str, note: str, frames: int | None = None) -> tuple[str, int | None]:
        if shape != self._decided:
            self._report(f"loop: {note}")
        else:
            log.debug("loop: %s", note)
        self._decided, self.shape, self.note = shape, shape, note
        return shape, frames
