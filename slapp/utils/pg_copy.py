"""PostgreSQL binary COPY encoding, for writing many rows with large arrays fast.

A text ``INSERT`` of a 20,000-element ``real[]`` formats and parses 20,000 decimal
numbers; the binary COPY format sends the 4-byte floats as they are. Arrays are
encoded with numpy in one vectorised step per array, and rows are streamed to the
server one at a time, so memory stays bounded by the largest row, not the batch.
"""
import io
import json
import struct
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)

# PostgreSQL type name -> (big-endian numpy dtype, type oid)
_NUMERIC_TYPES = {
    "bool": (np.dtype("?"), 16),
    "int2": (np.dtype(">i2"), 21),
    "int4": (np.dtype(">i4"), 23),
    "int8": (np.dtype(">i8"), 20),
    "float4": (np.dtype(">f4"), 700),
    "float8": (np.dtype(">f8"), 701),
}
_ALIASES = {"smallint": "int2", "int": "int4", "integer": "int4", "bigint": "int8",
            "real": "float4", "double precision": "float8", "boolean": "bool"}
_TEXT_TYPES = ("text", "jsonb")


def _canonical(pg_type: str) -> str:
    name = pg_type.strip().lower()
    return _ALIASES.get(name, name)


def _sized(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload


def encode_array(values: Any, element_type: str) -> bytes:
    """Encode an n-dimensional numeric array as a binary COPY field.

    Parameters
    ----------
    values : array_like
        Numbers without NULLs; any shape (an empty array becomes ``'{}'``).
    element_type : str
        PostgreSQL element type, e.g. ``"int4"`` or ``"real"``.

    Returns
    -------
    bytes
        The field, length prefix included.
    """
    dtype, oid = _NUMERIC_TYPES[_canonical(element_type)]
    array = np.asarray(values)
    if array.size == 0:
        return _sized(struct.pack("!iii", 0, 0, oid))
    header = struct.pack("!iii", array.ndim, 0, oid) + b"".join(
        struct.pack("!ii", length, 1) for length in array.shape)
    elements = np.empty(array.size, dtype=[("length", ">i4"), ("value", dtype)])
    elements["length"] = dtype.itemsize
    elements["value"] = array.ravel()
    return _sized(header + elements.tobytes())


def encode_field(value: Any, pg_type: str) -> bytes:
    """Encode one value of a row as a binary COPY field.

    Parameters
    ----------
    value : object
        ``None`` for NULL; a number, bool or str; a dict or list for ``jsonb``;
        an array-like for a type ending in ``[]``.
    pg_type : str
        The column's PostgreSQL type, e.g. ``"int8"``, ``"text"``, ``"real[]"``.

    Returns
    -------
    bytes
        The field, length prefix included.
    """
    if value is None:
        return _NULL
    name = _canonical(pg_type)
    if name.endswith("[]"):
        return encode_array(value, name[:-2])
    if name == "text":
        return _sized(str(value).encode("utf-8"))
    if name == "jsonb":
        return _sized(b"\x01" + json.dumps(value).encode("utf-8"))
    if name not in _NUMERIC_TYPES:
        raise ValueError(f"binary COPY of type {pg_type!r} is not supported")
    dtype, _ = _NUMERIC_TYPES[name]
    return _sized(np.array(value, dtype=dtype).tobytes())


def encode_rows(rows: Iterable[Sequence[Any]], pg_types: Sequence[str]) -> Iterator[bytes]:
    """Yield the binary COPY stream for ``rows``: signature, one chunk per row, trailer.

    Parameters
    ----------
    rows : iterable of sequences
        Each row has one value per entry of ``pg_types``.
    pg_types : sequence of str
        The PostgreSQL type of each column.

    Yields
    ------
    bytes
        Consecutive pieces of the stream.
    """
    field_count = struct.pack("!h", len(pg_types))
    yield _SIGNATURE
    for row in rows:
        if len(row) != len(pg_types):
            raise ValueError(f"row has {len(row)} values, {len(pg_types)} columns expected")
        yield field_count + b"".join(
            encode_field(value, pg_type) for value, pg_type in zip(row, pg_types))
    yield _TRAILER


class StreamReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, for ``cursor.copy_expert``.

    Reads slice the current chunk through a memoryview, so a large row is copied
    once into the returned block and never re-copied as it is consumed. An
    exception raised by the iterator is kept in :attr:`failure`: psycopg2 turns
    it into a ``QueryCanceled``, and the caller can raise the original instead.
    """

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._chunk = memoryview(b"")
        self._offset = 0
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        block = bytearray()
        while size < 0 or len(block) < size:
            if self._offset >= len(self._chunk):
                try:
                    chunk = next(self._chunks, None)
                except BaseException as failure:
                    self.failure = failure
                    raise
                if chunk is None:
                    break
                self._chunk, self._offset = memoryview(chunk), 0
                continue
            end = len(self._chunk) if size < 0 else self._offset + size - len(block)
            piece = self._chunk[self._offset:end]
            block += piece
            self._offset += len(piece)
        return bytes(block)
