"""The loop's shape (edge.shape): serial where threads cannot win, threads where they clearly do, a timed trial in
between, from stage costs given outright or measured on a fake clock, never from this machine's speed.
"""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest

from edge.reader import FrameReader
from edge.shape import (
    FIRST_RECHECK,
    HOP_MS,
    PROBE,
    PROBE_WARMUP,
    ROUNDS,
    SERIAL,
    SETTLE,
    THREADS,
    WINDOW,
    ShapeChooser,
    StageCosts,
    choose_shape,
    threads_ms,
)


@pytest.mark.parametrize(
    "decode, prepare, loop, cores, shape",
    [
        (0.05, 0.05, 0.05, 4, SERIAL),  # tiny frames, tiny model: nothing worth a hand-off
        (1.0, 0.05, 0.05, 4, SERIAL),  # decoding dominates; infer and prepare 0.05 ms: at most 0.1 ms to hide
        (10.0, 0.5, 20.0, 1, SERIAL),  # one core: the stages cannot run at once
        (10.0, 0.5, 20.0, 4, THREADS),  # infer 20 ms, decode 10 ms: 30.5 ms a frame serially, about 20 on threads
        (10.0, 0.0, 20.0, 2, THREADS),  # no preprocessing: one hand-off
        (1.0, 0.3, 0.2, 2, "trial"),  # the small-model case: only a timed trial tells
    ],
)
def test_the_shape_chosen_from_clear_costs_is_the_faster_one(decode, prepare, loop, cores, shape):
    costs = StageCosts(decode, prepare, loop)
    assert choose_shape(costs, cores) == shape
    best, worst = threads_ms(costs, cores, HOP_MS[0]), threads_ms(costs, cores, HOP_MS[1])
    if shape == SERIAL:  # threads would not be faster even if handing a frame over cost the least it can
        assert best > costs.serial_ms * 0.95
    if shape == THREADS:  # threads are faster even if every hand-off costs the most it does
        assert worst < costs.serial_ms


class FakeClock:
    """perf_counter for the reader: stands still until the fake capture, preparer or loop moves it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, ms: float) -> None:
        self.now += ms / 1000.0


class CostlyCamera:
    """A file of n numbered frames whose every read costs `decode_ms` on the fake clock."""

    def __init__(self, clock: FakeClock, decode_ms: float, n: int = 200):
        self.clock, self.decode_ms, self.n, self.reads, self.releases = clock, decode_ms, n, 0, 0

    def open(self):
        return self

    def read(self):
        if self.reads >= self.n:
            return False, None
        self.clock.spend(self.decode_ms)
        img = np.full((4, 4, 3), self.reads % 256, np.uint8)
        self.reads += 1
        return True, img

    def release(self):
        self.releases += 1


@pytest.mark.parametrize(
    "decode, prepare, loop, shape",
    [(0.05, 0.05, 0.05, SERIAL), (10.0, 0.5, 20.0, THREADS)],
    ids=["infer 0.05 ms: serial", "infer 20 ms, decode 10 ms: threads"],
)
def test_the_reader_measures_its_stages_and_takes_the_shape_they_call_for(decode, prepare, loop, shape):
    clock = FakeClock()
    cam = CostlyCamera(clock, decode)

    def prepare_fn(img):
        clock.spend(prepare)
        return img[:1, :1, 0].astype(np.int32)

    messages: list[str] = []
    chooser = ShapeChooser(cores=4, report=messages.append)
    reader = FrameReader(cam.open, name="clip", live=False, every_frame=True, prepare=prepare_fn, shape=chooser,
                         clock=clock).start()  # fmt: skip
    got = []
    with reader:
        while (frame := reader.get(timeout=5)) is not None:
            got.append(frame.index)
            if frame.index == PROBE_WARMUP + PROBE + 1:
                assert reader.shape == shape  # decided after the probe, and it stays
            clock.spend(loop)  # the loop's inference and drawing
    assert got == list(range(200)) and reader.shape == shape and cam.releases == 1
    assert len(messages) == 1 and messages[0].startswith(f"loop: {shape} (decode {decode:.2f} ms")
    assert astuple(chooser.costs) == pytest.approx((decode, prepare, loop))


def _probe(chooser: ShapeChooser, decode: float, prepare: float, loop: float, first: bool = True):
    """Feeds a serial probe (the first one has warm-up frames); returns the decision it ends with."""
    decisions = [chooser.serial_frame(decode, prepare, None if first else loop)]  # first frame: no loop time yet
    decisions += [chooser.serial_frame(decode, prepare, loop) for _ in range(PROBE_WARMUP * first + PROBE - 1)]
    assert all(d == (SERIAL, None) for d in decisions[:-1])
    return decisions[-1]


def _rounds(chooser: ShapeChooser, threads_ms: float, serial=(1.0, 0.3, 0.2)) -> tuple[tuple[str, int | None], int]:
    """Plays a trial that has just started its first threaded window: (its verdict, rounds it took)."""
    for k in range(1, ROUNDS + 1):
        for i in range(SETTLE + WINDOW):
            chooser.threads_frame(50.0 if i < SETTLE else threads_ms)  # the pipeline filling: not counted
        decision = chooser.threads_ended()
        if not chooser.deciding:
            return decision, k
        assert decision == (SERIAL, None)  # the round's serial window
        windows = [chooser.serial_frame(*serial) for _ in range(SETTLE + WINDOW)]
        assert windows == [(SERIAL, None)] * (SETTLE + WINDOW - 1) + [(THREADS, SETTLE + WINDOW)]
    raise AssertionError(f"no verdict after {ROUNDS} rounds")


@pytest.mark.parametrize(
    "threads_frame_ms, kept, rounds",
    [(1.0, THREADS, 2), (1.4, THREADS, ROUNDS), (1.45, SERIAL, 1), (2.0, SERIAL, 1)],
)
def test_a_close_call_is_timed_in_turns_and_the_faster_shape_kept_then_rechecked(threads_frame_ms, kept, rounds):
    messages: list[str] = []
    chooser = ShapeChooser(cores=2, report=messages.append)
    assert _probe(chooser, 1.0, 0.3, 0.2) == (THREADS, SETTLE + WINDOW)  # 1.5 ms serially: too close to call
    decision, played = _rounds(chooser, threads_frame_ms)
    assert played == rounds  # threads behind after round 1, or 15% apart after 2, end the trial
    assert decision == ((THREADS, FIRST_RECHECK) if kept == THREADS else (SERIAL, None))
    assert chooser.shape == kept and len(messages) == 1 and messages[0].startswith(f"loop: {kept} (")
    assert f"{threads_frame_ms:.2f}" in messages[0] and "1.50" in messages[0]  # both timings, as measured
    if kept == THREADS:  # the run of threads ends: the serial loop is timed again, in turns with threads
        assert chooser.threads_ended() == (SERIAL, None)
        window = [chooser.serial_frame(1.0, 0.3, 0.2) for _ in range(SETTLE + WINDOW)]
        assert window[-1] == (THREADS, SETTLE + WINDOW)
    else:  # after FIRST_RECHECK serial frames, threads are tried again
        again = [chooser.serial_frame(1.0, 0.3, 0.2) for _ in range(FIRST_RECHECK)]
        assert again[:-1] == [(SERIAL, None)] * (FIRST_RECHECK - 1) and again[-1] == (THREADS, SETTLE + WINDOW)
    assert _rounds(chooser, 2.0)[0][0] == SERIAL  # the re-check's verdict stands on its own figures
    assert len(messages) == (1 if kept == SERIAL else 2)  # logged at info only when the shape changes


def test_a_trial_compares_rounds_taken_in_turns_so_a_slow_spell_lands_on_both():
    chooser = ShapeChooser(cores=2, report=lambda m: None)
    assert _probe(chooser, 1.0, 0.3, 0.2) == (THREADS, SETTLE + WINDOW)  # serial window 1: 1.5 ms a frame
    # Another process holds the cores (everything takes twice as long) through serial and threaded window 2: the
    # serial window before the spell against the threaded one in it would say serial (1.5 against 2.4 ms a frame);
    # the rounds say threads, 1.8 against 2.25 ms.
    load = [1.0, 2.0, 1.0, 1.0]
    for k in range(ROUNDS):
        for _ in range(SETTLE + WINDOW):
            chooser.threads_frame(1.2 * load[k])
        decision = chooser.threads_ended()
        if not chooser.deciding:
            break
        for _ in range(SETTLE + WINDOW):
            decision = chooser.serial_frame(1.0 * load[k + 1], 0.3 * load[k + 1], 0.2 * load[k + 1])
    assert k == 1 and decision == (THREADS, FIRST_RECHECK)
    assert "measured 1.80 ms a frame, serial 2.25" in chooser.note
