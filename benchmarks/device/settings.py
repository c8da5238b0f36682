"""What the device-side benchmark shares with the host's: its error and the --threads parser. Standard library only."""

from __future__ import annotations


class BenchError(Exception):
    """The benchmark cannot run as asked; the message names the input and the fix."""


def parse_threads(text: str | int | tuple | list) -> tuple[int, ...]:
    """ "1,2,4" -> (1, 2, 4), in the order given, without repeats.

    Raises:
        BenchError: a value that is not a positive integer.
    """
    items = text if isinstance(text, (tuple, list)) else str(text).split(",")
    out: list[int] = []
    for item in items:
        s = str(item).strip()
        if not s:
            continue
        if not s.isdigit() or int(s) < 1:
            raise BenchError(f"--threads {text}: {s!r} is not a positive integer; pass e.g. --threads 1,2,4")
        if int(s) not in out:
            out.append(int(s))
    if not out:
        raise BenchError(f"--threads {text!r} names no thread count; pass e.g. --threads 1,2,4")
    return tuple(out)
