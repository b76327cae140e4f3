"""The IDX file format: magic numbers, the header, and reading that never trusts a header's claims.

An IDX file is a big-endian uint32 magic number (images or labels), one uint32 per dimension, then
the uint8 items. Files may be gzipped (``name.gz``). A header is only a claim (800 bytes can declare
40 GB), so every reader here checks it before reading and reads no more than it declares.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnistlab.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_NDIM_BY_MAGIC = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}
_MAGIC_BY_NDIM = {ndim: magic for magic, ndim in _NDIM_BY_MAGIC.items()}

# A header can declare 4·10⁹ items of 2³²×2³² pixels; files of one's own are read only up to
# these (far above any MNIST-family set), so a bogus header or a gzip bomb never fills memory.
MAX_CUSTOM_ITEMS = 10_000_000
MAX_CUSTOM_SIDE = 64
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX header declares: its magic number (images or labels) and the dimensions."""

    magic: int
    dims: tuple[int, ...]

    @property
    def size(self) -> int:
        """Bytes the header takes: the magic number, then one uint32 per dimension."""
        return 4 + 4 * len(self.dims)

    @property
    def file_size(self) -> int:
        """Bytes of the whole (decompressed) file it declares: the header, then one byte per element."""
        return self.size + math.prod(self.dims)


def header_size(magic: int) -> int | None:
    """Bytes of the header a file with this magic number has; None for a magic that is neither
    images nor labels (so its layout is unknown)."""
    ndim = _NDIM_BY_MAGIC.get(magic)
    return None if ndim is None else 4 + 4 * ndim


def unpack_magic(data: bytes) -> int:
    """The magic number in the first 4 bytes of ``data`` (which holds at least 4)."""
    return struct.unpack(">I", data[:4])[0]


def unpack_header(data: bytes) -> IdxHeader | None:
    """The header at the start of ``data``; None when ``data`` is too short to hold it or its
    magic number is unknown (callers tell which apart, to name the problem)."""
    if len(data) < 4:
        return None
    magic = unpack_magic(data)
    size = header_size(magic)
    if size is None or len(data) < size:
        return None
    return IdxHeader(magic, struct.unpack(f">{(size - 4) // 4}I", data[4:size]))


def open_idx(path: Path) -> BinaryIO:
    """A binary stream of the decompressed content: gzipped when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile is a binary stream
    return open(path, "rb")


def read_image_header(path: Path) -> IdxHeader:
    """The header of an IDX images file, from its first 16 bytes only: enough to know the image
    size without decompressing (or trusting) the rest."""
    size = 4 + 4 * _NDIM_BY_MAGIC[IMAGES_MAGIC]  # 16: the magic, then count, rows and columns
    try:
        with open_idx(path) as handle:
            head = handle.read(size)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read its IDX header ({exc}); replace the file") from None
    if len(head) < size:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes); replace the file")
    header = unpack_header(head)
    if header is None or header.magic != IMAGES_MAGIC:
        magic = unpack_magic(head)
        raise DataError(f"{path}: not an IDX image file (magic 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x}); "
                        "replace it with the right file")
    return header


def read_idx(path: Path | str, count: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``): images as (n, rows, cols) uint8, labels as (n,) uint8.

    ``count``: the number of items the header must declare (registered datasets); without it
    the header may declare at most MAX_CUSTOM_ITEMS items of at most MAX_CUSTOM_SIDE pixels a
    side. Either way no more than the declared size (plus one byte, to see trailing data) is
    ever decompressed.
    """
    path = Path(path)
    return parse_idx(read_bounded(path, count), path)


def read_bounded(path: Path, count: int | None) -> bytes:
    """The decompressed content of a raw or ``.gz`` IDX file, read while streaming and refused
    as soon as it would exceed the size its (checked) header declares.

    The bytes are returned unparsed, so a caller can check their digest first; a header too
    short or of an unknown magic comes back as read, for ``parse_idx`` to name.
    """
    try:
        with open_idx(path) as stream:
            return _read_stream(stream, path, count)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: corrupt gzip data ({error}); delete it and download "
                        f"or copy it again") from error
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error}); check it exists "
                        f"and is readable") from error


def _read_stream(stream: BinaryIO, source: Path, count: int | None) -> bytes:
    head = stream.read(4)
    size = header_size(unpack_magic(head)) if len(head) == 4 else None
    if size is None:
        return head  # parse_idx names it too short, or its bad magic
    head += stream.read(size - 4)
    header = unpack_header(head)
    if header is None:
        return head  # truncated header
    _check_declared(header.dims, source, count)
    expected = math.prod(header.dims)
    # One byte more than declared: enough to tell "trailing bytes" without reading them all. Read
    # in chunks: `read(n)` allocates n bytes up front, and the header's n is only a claim (800 bytes
    # can declare 40 GB), so memory follows the bytes actually there (decompressed so far).
    chunks, remaining = [], expected + 1
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return head + b"".join(chunks)


def _check_declared(dims: tuple[int, ...], source: Path, count: int | None) -> None:
    if count is not None:
        if dims[0] != count:
            raise DataError(f"{source}: header declares {dims[0]:,} items, this dataset has {count:,}; "
                            "the file is from another dataset or corrupt: replace it")
        return
    if dims[0] > MAX_CUSTOM_ITEMS or any(side > MAX_CUSTOM_SIDE for side in dims[1:]):
        raise DataError(f"{source}: header declares {' x '.join(f'{d:,}' for d in dims)}, more than "
                        f"the {MAX_CUSTOM_ITEMS:,} items of at most {MAX_CUSTOM_SIDE}x{MAX_CUSTOM_SIDE} "
                        "pixels read from a folder of one's own; the file is corrupt: replace it")


def parse_idx(data: bytes, source: Path | str) -> np.ndarray:
    """Parse decompressed IDX bytes; ``source`` names the file in error messages."""
    if len(data) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(data)} bytes); replace it")
    magic = unpack_magic(data)
    if header_size(magic) is None:
        raise DataError(
            f"{source}: not an IDX image or label file (magic 0x{magic:08x}, expected "
            f"0x{IMAGES_MAGIC:08x} or 0x{LABELS_MAGIC:08x}); replace it with the right file"
        )
    header = unpack_header(data)
    if header is None:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes); replace the file")
    dims = header.dims
    expected = header.file_size
    if len(data) < expected:
        raise DataError(
            f"{source}: truncated: header {dims} needs {expected} bytes but there are "
            f"{len(data)}; replace the file (download it again)"
        )
    if len(data) > expected:
        raise DataError(
            f"{source}: has trailing bytes: header {dims} needs {expected} bytes but there are "
            f"more; replace the file (download it again)"
        )
    # Copy so callers get a writable array that torch.from_numpy accepts without warnings.
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=header.size).reshape(dims).copy()
    except ValueError:  # only dims with a 0 get here: the others' product overflows numpy's index type
        raise DataError(f"{source}: impossible IDX header dimensions {dims}; replace the file") from None


def write_idx(path: Path | str, array: np.ndarray, gz: bool) -> Path:
    """Write a uint8 array of 1 (labels) or 3 (images) dimensions as an IDX file."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or array.ndim not in _MAGIC_BY_NDIM:
        raise ValueError(f"write_idx needs a uint8 array of 1 or 3 dims, got {array.dtype} "
                         f"with {array.ndim} dims")
    header = struct.pack(f">I{array.ndim}I", _MAGIC_BY_NDIM[array.ndim], *array.shape)
    data = header + array.tobytes()
    path = Path(path)
    # mtime=0 keeps the .gz bytes reproducible.
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path
