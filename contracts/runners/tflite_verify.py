"""verify_tflite(): a .tflite file's flatbuffer structure checked before any interpreter opens it.

tflite-runtime (the 32-bit Pi's interpreter) trusts the file: a truncated or corrupt model can crash the process
(exit 139, no message), so one bad file in `benchmarks.device.latency`
lost the rows of every good model measured with it.
This walks the model's tables with bounds checks (the file identifier, every offset, vector and string inside the
file, every tensor, buffer and operator index in range, external buffers inside the file) using only the standard
library, so the Pi runs it too. It is a structure check, not a checksum: the manifest's sha256 is that.

    verify_tflite("model/tflite_int8.tflite")   # raises ModelFileError naming the file and what is wrong
"""

from __future__ import annotations

import struct
from pathlib import Path

IDENTIFIER = b"TFL3"
# bytes per element of each TensorType in the schema (STRING, RESOURCE, VARIANT and INT4 are checked apart)
_ITEM_SIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2}
_N_TYPES = 19


class ModelFileError(ValueError):
    """The file is not a well-formed TFLite flatbuffer; the message names it and what is wrong."""


class _Reader:
    """Bounds-checked access to a flatbuffer's tables, vectors and strings."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.n = len(buf)

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or pos + size > self.n:
            raise ModelFileError(f"{what} at byte {pos} runs past the end of the file ({self.n} bytes)")

    def u8(self, pos: int) -> int:
        self._need(pos, 1, "a byte")
        return self.buf[pos]

    def _unpack(self, fmt: str, pos: int, what: str) -> int:
        self._need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def u16(self, pos: int) -> int:
        return self._unpack("<H", pos, "a vtable entry")

    def i32(self, pos: int) -> int:
        return self._unpack("<i", pos, "an int32")

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos, "an offset")

    def u64(self, pos: int) -> int:
        return self._unpack("<Q", pos, "a uint64")

    def table(self, pos: int, what: str) -> _Table:
        vtable = pos - self.i32(pos)
        vt_len, obj_len = self.u16(vtable), self.u16(vtable + 2)
        if vt_len < 4 or vt_len % 2:
            raise ModelFileError(f"the {what} table at byte {pos} has a malformed vtable (length {vt_len})")
        self._need(vtable, vt_len, f"the {what} vtable")
        self._need(pos, max(obj_len, 4), f"the {what} table")
        return _Table(self, pos, vtable, vt_len, obj_len, what)

    def deref(self, pos: int) -> int:
        """The position a uoffset at pos points to."""
        return pos + self.u32(pos)

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """(first element position, length) of the vector a uoffset at pos points to."""
        start = self.deref(pos)
        length = self.u32(start)
        self._need(start + 4, length * elem_size, f"the {what} vector ({length} entries)")
        return start + 4, length


class _Table:
    def __init__(self, r: _Reader, pos: int, vtable: int, vt_len: int, obj_len: int, what: str):
        self.r, self.pos, self.vtable, self.vt_len, self.obj_len, self.what = r, pos, vtable, vt_len, obj_len, what

    def field(self, i: int, size: int) -> int | None:
        """The position of field i, or None when it is absent (default value)."""
        entry = 4 + 2 * i
        if entry >= self.vt_len:
            return None
        off = self.r.u16(self.vtable + entry)
        if off == 0:
            return None
        if off + size > self.obj_len:
            raise ModelFileError(f"field {i} of the {self.what} table at byte {self.pos} lies outside the table")
        return self.pos + off

    def scalar(self, i: int, reader, size: int, default: int = 0) -> int:
        p = self.field(i, size)
        return default if p is None else reader(p)

    def vector(self, i: int, elem_size: int, name: str) -> tuple[int, int]:
        p = self.field(i, 4)
        return (0, 0) if p is None else self.r.vector(p, elem_size, f"{self.what}.{name}")

    def tables(self, i: int, name: str) -> list[_Table]:
        start, n = self.vector(i, 4, name)
        return [self.r.table(self.r.deref(start + 4 * k), name) for k in range(n)]

    def ints(self, i: int, name: str) -> list[int]:
        start, n = self.vector(i, 4, name)
        return [self.r.i32(start + 4 * k) for k in range(n)]

    def string(self, i: int, name: str) -> None:
        start, n = self.vector(i, 1, name)
        if start and self.r.u8(start + n) != 0:
            raise ModelFileError(f"the string {self.what}.{name} is not terminated")

    def subtable(self, i: int, name: str) -> _Table | None:
        p = self.field(i, 4)
        return None if p is None else self.r.table(self.r.deref(p), name)


def _check_model(r: _Reader) -> None:
    model = r.table(r.u32(0), "Model")
    opcodes = model.tables(1, "operator_codes")
    for oc in opcodes:
        oc.string(1, "custom_code")
    buffers = model.tables(4, "buffers")
    for b in buffers:
        b.vector(0, 1, "data")
        offset, size = b.scalar(1, r.u64, 8), b.scalar(2, r.u64, 8)
        if offset > 1 and offset + size > r.n:  # weights stored after the flatbuffer (models over 2 GB)
            raise ModelFileError(f"a buffer at bytes {offset}-{offset + size} lies past the end of the file")
    subgraphs = model.tables(2, "subgraphs")
    if not subgraphs:
        raise ModelFileError("the model has no subgraph")
    for sg in subgraphs:
        tensors = sg.tables(0, "tensors")
        for t in tensors:
            buffer = t.scalar(2, r.u32, 4)
            if not 0 <= buffer < max(len(buffers), 1):
                raise ModelFileError(f"tensor at byte {t.pos} names buffer {buffer} of {len(buffers)}")
            shape = t.ints(0, "shape")
            if any(d < -1 for d in shape):
                raise ModelFileError(f"tensor at byte {t.pos} has a negative dimension")
            dtype = t.scalar(1, r.u8, 1)
            if dtype >= _N_TYPES:
                raise ModelFileError(f"tensor at byte {t.pos} has an unknown type {dtype}")
            data = buffers[buffer].vector(0, 1, "data")[1] if buffers else 0
            if data and dtype in _ITEM_SIZE and t.field(6, 4) is None:  # a dense constant: its size is its shape's
                want = _ITEM_SIZE[dtype]
                for d in shape:
                    want *= d
                if want != data:
                    raise ModelFileError(f"constant tensor at byte {t.pos} holds {data} bytes, its shape needs {want}")
            t.string(3, "name")
            q = t.subtable(4, "quantization")
            if q is not None:
                q.vector(2, 4, "scale")
                q.vector(3, 8, "zero_point")
        n = len(tensors)
        for name, idx in (("inputs", 1), ("outputs", 2)):
            if any(not 0 <= v < n for v in sg.ints(idx, name)):
                raise ModelFileError(f"a subgraph {name[:-1]} names a tensor outside its {n} tensors")
        for op in sg.tables(3, "operators"):
            code = op.scalar(0, r.u32, 4)
            if code >= len(opcodes):
                raise ModelFileError(f"an operator uses opcode {code} of {len(opcodes)}")
            for name, idx in (("inputs", 1), ("outputs", 2)):
                if any(not -1 <= v < n for v in op.ints(idx, name)):
                    raise ModelFileError(f"an operator's {name} name a tensor outside its subgraph's {n} tensors")
            op.subtable(4, "builtin_options")
            op.vector(5, 1, "custom_options")


def verify_tflite(path: str | Path) -> None:
    """Checks that a file is a structurally sound TFLite model before an interpreter opens it.

    Raises:
        ModelFileError: one line naming the file and what is wrong (empty, truncated, not a TFLite file, an
            offset or index out of range), ending with the fix.
    """
    p = Path(path)
    fix = "copy the file again or re-run export"
    try:
        buf = p.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{p} cannot be read ({e.strerror or e}): {fix}") from None
    if len(buf) < 8:
        raise ModelFileError(f"{p} is {'empty' if not buf else f'only {len(buf)} bytes'}, not a TFLite model: {fix}")
    if buf[4:8] != IDENTIFIER:
        raise ModelFileError(f"{p} is not a TFLite model (no TFL3 identifier): {fix}")
    try:
        _check_model(_Reader(buf))
    except ModelFileError as e:
        raise ModelFileError(f"{p} is corrupt or truncated ({e}): {fix}") from None
    except (struct.error, RecursionError, IndexError) as e:
        raise ModelFileError(f"{p} is corrupt or truncated ({e}): {fix}") from None
