"""What every stage prints: progress lines on stdout, and errors as one line naming the input and the fix.

log("phase 1 (15 epochs, lr 0.001)")
print(f"export: error: {one_line(e)}", file=sys.stderr)   # a CLI's exit-2 message
row["error"] = first_line(e)                               # a converter's or runtime's reason, kept short
"""

from __future__ import annotations


def log(msg: str) -> None:
    """A progress line, flushed at once so that a pipe or the journal shows it while the work goes on."""
    print(msg, flush=True)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (runtimes print pages), or its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def one_line(e: BaseException | str) -> str:
    """A message with its line breaks and runs of spaces folded, for `NAME: error: ...` on stderr."""
    return " ".join(str(e).split()) or (type(e).__name__ if isinstance(e, BaseException) else "")
