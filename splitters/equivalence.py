"""Whether two copies of a task's output agree, for splitters whose outputs are numbers.

The manager runs some tasks on two volunteers and compares what they sent (see
`Splitter.equivalent`); copies with the same bytes agree without coming here. These helpers
read .npy and .npz files and JSON, and compare values, not bytes: two honest copies can
differ in bytes where the values are the same (another numpy writes another .npy header,
a big-endian host another byte order, another CPU another NaN bit pattern) or differ in
value within rounding (another BLAS adds up a product in another order).

Copies come from volunteers, so anything may be in them: every helper returns False for a
file that is not what it should be (truncated, garbage, pickled objects, the wrong shape or
type) and never raises, logging why at debug level. Large files are never read whole: a
.npy is memory-mapped and compared a chunk at a time; an .npz member, which cannot be
mapped, is read one at a time from each copy, and only once the two copies' sizes of it
match.

numpy is imported here, so splitters.api, which daemons without numpy load, does not
import this module; the byte-for-byte comparison is `splitters.api.same_bytes`.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

# Elements compared at a time: 8 MiB of float64 per copy, and a few temporaries of that.
CHUNK_ELEMENTS = 1 << 20
# Two honest copies of one array differ in size at most by their .npy headers (numpy
# versions pad them differently): a member of an .npz this much larger than the other
# copy's is not the same array, and is not read.
HEADER_SLACK_BYTES = 4096
# Output JSON is small (metrics); a copy larger than this is not what the task writes.
MAX_JSON_BYTES = 16 * 1024 * 1024
# Kinds compared with a tolerance: floating point, real and complex. Every other kind
# (integers and booleans, whose arithmetic is exact, strings, ...) must be equal.
INEXACT_KINDS = "fc"


@dataclass(frozen=True)
class Tolerance:
    """How far apart two floating-point values may be and still agree: |x - y| at most
    atol + scaled_atol * scale + rtol * min(|x|, |y|), where `scale` is the array's
    magnitude, its largest finite |value| (the smaller of the two copies' largest, so that
    one copy cannot widen the tolerance by holding a huge value). NaN agrees with NaN and
    an infinity with the same infinity; integers and other exact kinds are always compared
    exactly."""

    rtol: float = 0.0
    atol: float = 0.0
    scaled_atol: float = 0.0


EXACT = Tolerance()

# A rule for an .npy file: the tolerance for the array's dtype.
DtypeRule = Callable[[np.dtype[Any]], Tolerance]
# A rule for an .npz file: the tolerance for a member (its name without .npy) and dtype.
MemberRule = Callable[[str, np.dtype[Any]], Tolerance]


def _rejected(path: Path, why: str, *args: object) -> bool:
    log.debug("%s disagrees: " + why, path, *args)
    return False


# --- arrays -----------------------------------------------------------------------------


def _same_dtype(x: np.dtype[Any], y: np.dtype[Any]) -> bool:
    """Equal dtypes, byte order aside (a big-endian volunteer writes >f8 for <f8)."""
    return x.newbyteorder("=") == y.newbyteorder("=")


def _chunks(x: NDArray[Any], y: NDArray[Any]) -> Iterator[tuple[NDArray[Any], NDArray[Any]]]:
    """Matching slices of two arrays of one shape, along the first axis, each about
    CHUNK_ELEMENTS long: for memory maps, only the slice in hand is read into memory."""
    if x.ndim == 0:
        yield np.asarray(x), np.asarray(y)
        return
    per_row = max(1, math.prod(x.shape[1:]))
    rows = max(1, CHUNK_ELEMENTS // per_row)
    for start in range(0, x.shape[0], rows):
        yield np.asarray(x[start : start + rows]), np.asarray(y[start : start + rows])


def _largest_finite(x: NDArray[Any]) -> float:
    largest = 0.0
    for chunk, _ in _chunks(x, x):
        magnitudes = np.abs(chunk[np.isfinite(chunk)])
        if magnitudes.size:
            largest = max(largest, float(magnitudes.max()))
    return largest


def arrays_agree(x: NDArray[Any], y: NDArray[Any], tolerance: Tolerance) -> bool:
    """Whether two arrays (in memory or memory-mapped) have one shape and dtype (byte
    order aside) and agree element by element: within `tolerance` for floating-point
    kinds, exactly for the others."""
    if x.shape != y.shape or not _same_dtype(x.dtype, y.dtype):
        return False
    if x.dtype.kind not in INEXACT_KINDS:
        return all(np.array_equal(a, b) for a, b in _chunks(x, y))
    atol = tolerance.atol
    if tolerance.scaled_atol:
        atol += tolerance.scaled_atol * min(_largest_finite(x), _largest_finite(y))
    with np.errstate(all="ignore"):
        for a, b in _chunks(x, y):
            if tolerance == EXACT:
                agree = (a == b) | (np.isnan(a) & np.isnan(b))
            else:
                # isclose bounds |a - b| by rtol * |b|: both ways round, it is symmetric.
                agree = np.isclose(a, b, tolerance.rtol, atol, equal_nan=True) & np.isclose(
                    b, a, tolerance.rtol, atol, equal_nan=True
                )
            if not agree.all():
                return False
    return True


def _open_npy(path: Path) -> NDArray[Any] | None:
    """The array of a .npy file, memory-mapped; None (logged) unless the file is exactly
    one array that np.save could have written."""
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # truncated, garbage, pickled objects, ...
        _rejected(path, "not a readable .npy array: %s", error)
        return None
    if not isinstance(loaded, np.ndarray):  # an .npz archive
        loaded.close()
        _rejected(path, "not a .npy array")
        return None
    # np.save writes the header and the data, nothing after: more is not its file.
    if isinstance(loaded, np.memmap):
        expected, size = loaded.offset + loaded.nbytes, path.stat().st_size
        if size != expected:
            _rejected(path, "%d bytes, not the %d its header says", size, expected)
            return None
    return loaded


def close_arrays(a: Path, b: Path, tolerance: Tolerance | DtypeRule = EXACT) -> bool:
    """Whether two .npy files hold arrays of one shape and dtype whose values agree:
    exactly by default, or within a tolerance (given, or chosen for the arrays' dtype).
    Object arrays are refused (nothing is unpickled); so is any file np.save did not
    write. Both files are memory-mapped and compared a chunk at a time."""
    try:
        x = _open_npy(a)
        y = _open_npy(b) if x is not None else None
        if x is None or y is None:
            return False
        rule = tolerance if isinstance(tolerance, Tolerance) else tolerance(x.dtype)
        if not arrays_agree(x, y, rule):
            return _rejected(b, "its array differs from %s's", a)
        return True
    except Exception as error:  # never raise on what a volunteer sent
        return _rejected(b, "comparing with %s failed: %r", a, error)


def same_arrays(a: Path, b: Path) -> bool:
    """Whether two .npy files hold the same array: same shape, dtype and values (NaN
    equal to NaN), however their bytes differ (header padding, byte order, NaN bits)."""
    return close_arrays(a, b, EXACT)


# --- .npz archives ----------------------------------------------------------------------


def _member_sizes(path: Path) -> dict[str, int] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except Exception as error:
        _rejected(path, "not a readable .npz archive: %s", error)
        return None
    sizes = {info.filename: info.file_size for info in infos}
    if len(sizes) != len(infos):
        _rejected(path, "two members of one name")
        return None
    return sizes


def close_npz(a: Path, b: Path, rule: MemberRule) -> bool:
    """Whether two .npz archives hold the same members, each an array of one shape and
    dtype in both, whose values agree within `rule(member, dtype)`. Nothing is unpickled;
    a member is read from each copy only when the two are about one size (a copy cannot
    make the other be read at a size it chose), one member at a time."""
    try:
        sizes_a, sizes_b = _member_sizes(a), _member_sizes(b)
        if sizes_a is None or sizes_b is None:
            return False
        if sizes_a.keys() != sizes_b.keys():
            return _rejected(b, "members %s, not %s's %s", sorted(sizes_b), a, sorted(sizes_a))
        for name, size in sizes_a.items():
            if abs(size - sizes_b[name]) > HEADER_SLACK_BYTES:
                return _rejected(b, "%s is %d bytes, %d in %s", name, sizes_b[name], size, a)
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            for member in x.files:
                one, other = x[member], y[member]  # the .npy inside, checked by numpy
                if not isinstance(one, np.ndarray) or not isinstance(other, np.ndarray):
                    return _rejected(b, "%s is not an array", member)
                if not arrays_agree(one, other, rule(member, one.dtype)):
                    return _rejected(b, "%s differs from %s's", member, a)
        return True
    except Exception as error:  # a bad CRC, a truncated member, pickled objects, ...
        return _rejected(b, "comparing with %s failed: %r", a, error)


# --- JSON -------------------------------------------------------------------------------


def _numbers_agree(x: float, y: float, tolerance: Tolerance) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    bound = tolerance.atol + tolerance.rtol * min(abs(x), abs(y))
    return abs(x - y) <= bound


def values_agree(x: Any, y: Any, tolerance: Tolerance) -> bool:
    """Two parsed JSON values: the same structure (keys, lengths, types), strings,
    integers and booleans equal, and floats within `tolerance` (its scaled_atol unused:
    JSON numbers have no array to scale by)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(values_agree(x[k], y[k], tolerance) for k in x)
    if isinstance(x, list):
        return len(x) == len(y) and all(
            values_agree(a, b, tolerance) for a, b in zip(x, y, strict=True)
        )
    if isinstance(x, float):
        return _numbers_agree(x, y, tolerance)
    return bool(x == y)  # str, int, bool, None


def _read_json(path: Path) -> tuple[bool, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        return _rejected(path, "larger than %d bytes", MAX_JSON_BYTES), None
    try:
        return True, json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        return _rejected(path, "not JSON: %s", error), None


def close_json(a: Path, b: Path, tolerance: Tolerance) -> bool:
    """Whether two JSON files hold the same value, floats within `tolerance`: formatting
    aside, as another Python's json may lay it out."""
    try:
        readable, x = _read_json(a)
        if not readable:
            return False
        readable, y = _read_json(b)
        if not readable:
            return False
        if not values_agree(x, y, tolerance):
            return _rejected(b, "its values differ from %s's", a)
        return True
    except Exception as error:
        return _rejected(b, "comparing with %s failed: %r", a, error)
