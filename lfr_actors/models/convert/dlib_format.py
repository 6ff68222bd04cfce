"""A reader for dlib's binary serialisation primitives.

dlib writes its objects with a handful of primitives (see ``dlib/serialize.h`` and
``dlib/cuda/tensor.h``):

- integers of every width: one control byte whose low nibble is the number of magnitude
  bytes that follow (1..8, little-endian) and whose bit 0x80 marks a negative value;
  zero is ``01 00``;
- ``float`` and ``double``: a ``float_details`` pair, an int64 mantissa then an int16
  exponent, both as integers above; value = mantissa × 2^exponent, and the exponents
  32000/32001/32002 stand for +inf/−inf/NaN;
- ``bool``: one ASCII byte, ``'0'`` or ``'1'``;
- string: its length as an integer, then the raw bytes;
- ``resizable_tensor``: version 2, num_samples, k, nr, nc, then the values as raw
  little-endian IEEE float32 in NCHW order;
- ``alias_tensor``: version 1 and the four dimensions, no data.

:class:`DlibReader` reads them from ``bytes`` with a cursor. Every failure is a
:class:`~lfr_actors.errors.ModelFormatError` that names the byte offset and what was
expected there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from lfr_actors.errors import ModelFormatError

FLOAT_INF_EXPONENT = 32000
FLOAT_NINF_EXPONENT = 32001
FLOAT_NAN_EXPONENT = 32002

TENSOR_VERSION = 2
ALIAS_TENSOR_VERSION = 1

# Names and dimensions are read before data; a corrupt length must not make the reader
# try to allocate gigabytes, so anything longer than the rest of the file is refused.
_MAX_STRING = 1 << 16


class DlibReader:
    """Reads dlib serialisation primitives from ``data``, starting at ``offset``.

    ``source`` names the file in error messages. Each ``read_*`` method takes a
    ``what`` argument describing the value for the error message, e.g.
    ``"num_filters of conv layer 3"``.
    """

    def __init__(self, data: bytes, offset: int = 0, source: str = "dlib file") -> None:
        self._data = memoryview(data)
        self._pos = offset
        self.source = source

    @property
    def offset(self) -> int:
        """Byte offset of the next value to be read."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Number of bytes not yet read."""
        return len(self._data) - self._pos

    def error(self, message: str, offset: int | None = None) -> ModelFormatError:
        """A :class:`ModelFormatError` for ``message`` at ``offset`` (default: cursor)."""
        at = self._pos if offset is None else offset
        return ModelFormatError(f"{self.source}: at byte {at}: {message}")

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining:
            raise self.error(
                f"truncated: {what} needs {n} bytes but only {self.remaining} are left"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def read_int(self, what: str = "integer", *, max_bytes: int = 8, signed: bool = True) -> int:
        """An integer in dlib's control-byte format.

        ``max_bytes`` is the width of the C++ type (dlib refuses more magnitude bytes
        than fit); ``signed=False`` refuses negative values, as dlib does for unsigned
        types.
        """
        start = self._pos
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > max_bytes:
            raise self.error(
                f"expected {what} (integer of at most {max_bytes} bytes), "
                f"found control byte 0x{control:02x}",
                start,
            )
        negative = bool(control & 0x80)
        if negative and not signed:
            raise self.error(f"expected {what} (unsigned integer), found a negative one", start)
        value = int.from_bytes(self._take(size, what), "little")
        return -value if negative else value

    def read_uint(self, what: str = "unsigned integer", *, max_bytes: int = 8) -> int:
        """A non-negative integer in dlib's control-byte format."""
        return self.read_int(what, max_bytes=max_bytes, signed=False)

    def expect_int(self, allowed: Iterable[int], what: str) -> int:
        """An integer that must be one of ``allowed`` (a version number, a mode)."""
        start = self._pos
        allowed = tuple(allowed)
        value = self.read_int(what)
        if value not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise self.error(f"expected {what} {want}, found {value}", start)
        return value

    def read_float(self, what: str = "float") -> float:
        """A ``float`` or ``double`` stored as dlib's ``float_details``.

        Returns the exact value as a Python float; a C++ ``float`` has a mantissa of at
        most 24 bits, so the value is exactly representable in float32 as well.
        """
        mantissa = self.read_int(f"mantissa of {what}", max_bytes=8)
        exponent = self.read_int(f"exponent of {what}", max_bytes=2)
        if exponent == FLOAT_INF_EXPONENT:
            return math.inf
        if exponent == FLOAT_NINF_EXPONENT:
            return -math.inf
        if exponent == FLOAT_NAN_EXPONENT:
            return math.nan
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            return math.copysign(math.inf, mantissa)

    def read_bool(self, what: str = "bool") -> bool:
        """A ``bool``: the ASCII byte ``'0'`` or ``'1'``."""
        start = self._pos
        byte = self._take(1, what)[0]
        if byte == ord("1"):
            return True
        if byte == ord("0"):
            return False
        raise self.error(f"expected {what} (bool, '0' or '1'), found byte 0x{byte:02x}", start)

    def read_string(self, what: str = "string") -> str:
        """A string: its length then its bytes (decoded as Latin-1, so never fails)."""
        start = self._pos
        length = self.read_uint(f"length of {what}")
        if length > min(_MAX_STRING, self.remaining):
            raise self.error(
                f"expected {what}, found a string length of {length} "
                f"with {self.remaining} bytes left",
                start,
            )
        return bytes(self._take(length, what)).decode("latin-1")

    def expect_string(self, allowed: Iterable[str], what: str) -> str:
        """A string that must be one of ``allowed``, e.g. the name that starts a layer."""
        start = self._pos
        allowed = tuple(allowed)
        want = " or ".join(repr(a) for a in allowed)
        try:
            value = self.read_string(what)
        except ModelFormatError as exc:
            raise self.error(f"expected {what} {want}, found no readable string", start) from exc
        if value not in allowed:
            raise self.error(f"expected {what} {want}, found {value!r}", start)
        return value

    def _dims(self, what: str) -> tuple[int, int, int, int]:
        n = self.read_int(f"num_samples of {what}")
        k = self.read_int(f"k of {what}")
        nr = self.read_int(f"nr of {what}")
        nc = self.read_int(f"nc of {what}")
        return n, k, nr, nc

    def read_tensor(self, what: str = "tensor") -> npt.NDArray[np.float32]:
        """A ``resizable_tensor`` as a float32 array of shape (num_samples, k, nr, nc)."""
        start = self._pos
        self.expect_int((TENSOR_VERSION,), f"version of {what}")
        dims = self._dims(what)
        if any(d < 0 for d in dims):
            raise self.error(f"expected {what} with non-negative dimensions, found {dims}", start)
        count = math.prod(dims)
        raw = self._take(4 * count, f"data of {what} {dims}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self, what: str = "alias_tensor") -> tuple[int, int, int, int]:
        """An ``alias_tensor``: its four dimensions (it holds no data)."""
        self.expect_int((ALIAS_TENSOR_VERSION,), f"version of {what}")
        return self._dims(what)

    def expect_end(self) -> None:
        """Fail unless every byte has been read."""
        if self.remaining:
            raise self.error(f"expected end of file, found {self.remaining} more bytes")
