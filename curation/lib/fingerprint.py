"""Duplicate fingerprints for QA pairs. Django-free.

* Exact duplicates: ``content_hash`` = SHA-256 of the normalized instruction, input and
  output joined by U+001F. Normalizing (NFKC, casefold, whitespace collapsed, punctuation
  dropped) makes "高血压能吃党参吗？" and "高血压能吃党参吗" the same question.
* Near duplicates: ``simhash64`` over character 3-grams of the normalized text, compared by
  Hamming distance; ``NearDuplicateIndex`` finds a fingerprint within ``max_distance`` bits
  (default 3) with the pigeonhole trick: split the 64 bits into ``max_distance + 1`` bands,
  and two fingerprints that differ in at most ``max_distance`` bits agree on a whole band.
  ``near_duplicate_distance(text)`` gives the measured threshold for a text: 4 bits for
  Chinese-dominant text, 3 otherwise (build the index with ``max_distance=4`` and pass the
  per-text threshold to ``query``). A near duplicate is a flag for review, never a drop.

SimHash details. Each 3-gram (three code points, each < 2**21) is packed into one injective
63-bit integer and mixed with the SplitMix64 finalizer, vectorised with numpy. That hash is
pure integer arithmetic, so fingerprints are identical in every process, on every machine
and across Python versions (never the salted built-in ``hash()``). SplitMix64 is used instead of
blake2b per shingle because it runs inside numpy: a Python-level blake2b call per 3-gram
would cost more than the whole rest of the import (1.5 million 3-grams in the toyhom sample).
Bit i of the fingerprint is set when more than half of the *distinct* 3-grams have bit i set
(each distinct 3-gram votes once: counting repeats lets the few 3-grams every English text
repeats, "the", "ing", " of", pull unrelated fingerprints together; on MedQuAD that halved
the near-duplicate flags and removed every flagged pair whose 3-gram Jaccard similarity was
below 0.6). The result is a *signed* 64-bit integer so that it fits a Django
``BigIntegerField``.

Texts whose normalized form is shorter than ``MIN_NEAR_DUP_CHARS`` (8) characters get no
near-duplicate check (``record_simhash`` returns None): with so few 3-grams, one changed
character moves the fingerprint by many bits, and unrelated short questions ("头痛怎么办",
"发烧怎么办") would collide on their shared characters anyway. Exact duplicates of short texts are
still caught by ``content_hash``.

Imports use ``record_fingerprints_many``: the same values as ``record_fingerprints`` row by
row, with the SimHash of many texts computed in a few numpy calls (``simhash_many``) instead
of a dozen per text.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator

import numpy as np

MIN_NEAR_DUP_CHARS = 8
DEFAULT_MAX_DISTANCE = 3
# Measured thresholds (docs/importing.md): 3 bits for Latin-script text, where unrelated
# templated English answers already come within 4 bits; 4 bits for Chinese-dominant text,
# where unrelated pairs never came closer than 14 bits and real near duplicates (an answer
# without its "您好，" greeting) sit at exactly 4.
NEAR_DUPLICATE_DISTANCE = 3
NEAR_DUPLICATE_DISTANCE_CJK = 4
_MASK64 = (1 << 64) - 1
_SIGN = 1 << 63


# --------------------------------------------------------------------------- normalize


def _punctuation_class() -> str:
    """A regex character class of every Unicode punctuation (P*) code point in the BMP plus
    ASCII symbols that people think of as punctuation ($+<=>^`|~)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        ch = chr(cp)
        if unicodedata.category(ch)[0] == "P" or ch in "$+<=>^`|~":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    parts = []
    for lo, hi in ranges:
        parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
    return "[" + "".join(parts) + "]+"


_PUNCT = re.compile(_punctuation_class())
# Chinese does not separate words with spaces, so a space between two CJK characters is
# noise ("可以 适量" is "可以，适量" is "可以适量"); spaces next to Latin text are kept.
_CJK = "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_SPACE = re.compile(f"(?<=[{_CJK}]) (?=[{_CJK}])")


def normalize(text: str) -> str:
    """NFKC, casefold, drop punctuation (CJK and ASCII), collapse whitespace to single
    spaces and drop those between two CJK characters, strip.

    Punctuation is dropped before NFKC as well as after it: Chinese text is full of
    full-width punctuation ("，", "？") that makes a string non-NFKC, and a full NFKC pass
    costs 5x more than the check, so dropping it first usually leaves nothing to normalize.
    """
    if not text:
        return ""
    text = _PUNCT.sub("", text)
    if not unicodedata.is_normalized("NFKC", text):
        text = _PUNCT.sub("", unicodedata.normalize("NFKC", text))
    text = " ".join(text.casefold().split())
    if " " in text:
        text = _CJK_SPACE.sub("", text)
    return text


# --------------------------------------------------------------------------- exact duplicates


def content_hash(instruction: str, input: str, output: str) -> str:  # noqa: A002 - contract name
    """SHA-256 hex of the normalized fields joined with U+001F: the exact-duplicate key."""
    joined = "\x1f".join((normalize(instruction), normalize(input), normalize(output)))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- SimHash

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_S42, _S21 = np.uint64(42), np.uint64(21)
_LITTLE = sys.byteorder == "little"


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer, in place on a uint64 array (wrap-around multiplication). It is
    a bijection of 64-bit integers, so distinct 3-gram keys get distinct hashes."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.uint64)


def _shingle_keys(cp: np.ndarray) -> np.ndarray:
    """One injective 63-bit key per 3-gram: three code points (< 2**21 each) side by side."""
    if cp.size < 3:
        cp = np.concatenate([cp, np.zeros(3 - cp.size, dtype=np.uint64)])
    keys = cp[:-2] << _S42
    keys |= cp[1:-1] << _S21
    keys |= cp[2:]
    return keys


def _bytes_le(hashes: np.ndarray) -> np.ndarray:
    """uint8 view of uint64 hashes, each least significant byte first."""
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        hashes = hashes.byteswap()
    return hashes.view(np.uint8)


def _bit_counts(hashes: np.ndarray) -> np.ndarray:
    """How many hashes have each bit set: 64 counts, entry k*8+j being bit 7-j of byte k
    (np.unpackbits order, which np.packbits folds back into the same bytes)."""
    bits = np.unpackbits(_bytes_le(hashes)).reshape(-1, 64)
    # A uint16 accumulator is the fastest numpy reduction here and exact below 65,536 rows.
    return np.add.reduce(bits, axis=0, dtype=np.uint16 if hashes.size < 65536 else np.int64)


def _simhash_normalized(norm: str) -> int:
    if not norm:
        return 0
    hashes = np.sort(_mix(_shingle_keys(_codepoints(norm))))
    if hashes.size > 1:  # each distinct 3-gram votes once (the mix is a bijection of the key)
        keep = np.empty(hashes.size, dtype=bool)
        keep[0] = True
        np.not_equal(hashes[1:], hashes[:-1], out=keep[1:])
        hashes = hashes[keep]
    votes = _bit_counts(hashes) > hashes.size // 2  # strict majority per bit; a tie votes 0
    unsigned = int.from_bytes(np.packbits(votes).tobytes(), "little")
    return unsigned - (1 << 64) if unsigned & _SIGN else unsigned


def simhash64(text: str) -> int:
    """64-bit SimHash over the distinct character 3-grams of ``normalize(text)``, as a
    signed int64. The empty text hashes to 0; a text of one or two characters is one
    zero-padded 3-gram."""
    return _simhash_normalized(normalize(text))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit fingerprints (signed or unsigned)."""
    return ((a ^ b) & _MASK64).bit_count()


# --------------------------------------------------------------------------- records


def near_duplicate_text(instruction: str, input: str, output: str) -> str:  # noqa: A002
    """The normalized text a QA pair's SimHash is computed on: its fields joined by spaces."""
    return _join((normalize(instruction), normalize(input), normalize(output)))


def _join(parts: tuple[str, ...]) -> str:
    text = " ".join(part for part in parts if part)
    return _CJK_SPACE.sub("", text) if " " in text else text


_CJK_CHARS = re.compile(f"[{_CJK}]+")


def near_duplicate_distance(text: str) -> int:
    """The Hamming distance up to which ``text`` (normalized or not) and another text count
    as near duplicates: 4 when at least half of its non-space characters are CJK, else 3."""
    letters = len(text) - text.count(" ")
    cjk = sum(len(run) for run in _CJK_CHARS.findall(text))
    return NEAR_DUPLICATE_DISTANCE_CJK if letters and cjk * 2 >= letters else NEAR_DUPLICATE_DISTANCE


def record_simhash(instruction: str, input: str, output: str) -> int | None:  # noqa: A002
    """SimHash of a pair's question + answer, or None when too short for a near-duplicate check."""
    text = near_duplicate_text(instruction, input, output)
    if len(text) < MIN_NEAR_DUP_CHARS:
        return None
    return _simhash_normalized(text)


def record_fingerprints(instruction: str, input: str, output: str) -> tuple[str, int | None]:  # noqa: A002
    """``(content_hash, record_simhash)`` normalizing each field once."""
    parts = (normalize(instruction), normalize(input), normalize(output))
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    text = _join(parts)
    return digest, (_simhash_normalized(text) if len(text) >= MIN_NEAR_DUP_CHARS else None)


def record_fingerprints_many(rows: Iterable[tuple[str, str, str]]) -> list[tuple[str, int | None]]:
    """``record_fingerprints`` for many ``(instruction, input, output)`` rows: the same values,
    with the SimHash of all rows computed together (see ``simhash_many``)."""
    digests: list[str] = []
    texts: list[str] = []
    at: list[int] = []
    for instruction, input, output in rows:  # noqa: A001 - the field's name
        parts = (normalize(instruction), normalize(input), normalize(output))
        text = _join(parts)
        if len(text) >= MIN_NEAR_DUP_CHARS:
            at.append(len(digests))
            texts.append(text)
        digests.append(hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest())
    simhashes: list[int | None] = [None] * len(digests)
    for i, value in zip(at, simhash_many(texts)):
        simhashes[i] = value
    return list(zip(digests, simhashes))


# --------------------------------------------------------------------------- batches

# Batch functions cut their input at about this many code points: a batch needs about
# 100 bytes of memory per code point (6-7 MB) and larger batches were no faster.
BATCH_CHARS = 1 << 16
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SALTS = tuple(np.uint64(c) for c in (0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB))


def batches(lengths: list[int], limit: int) -> Iterator[slice]:
    """Consecutive slices of ``lengths`` adding up to at most ``limit`` (a single longer
    item is a slice of its own)."""
    start = total = 0
    for i, n in enumerate(lengths):
        if total and total + n > limit:
            yield slice(start, i)
            start, total = i, 0
        total += n
    if start < len(lengths):
        yield slice(start, len(lengths))


def first_occurrences(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Boolean mask that is True at the first position of every distinct ``(groups[i],
    values[i])`` pair (uint64 values, non-negative integer groups). Faster than sorting.

    Every position is filed in a hash table under its pair; each slot keeps its smallest
    position (``np.minimum.at``), and a position whose pair equals that smallest position's
    pair is settled: it is the first occurrence exactly when it is that position. Positions
    that collided with another pair share their slot only with each other, so they go round
    again with another hash; the few left after that are settled by sorting.
    """
    n = values.size
    first = np.zeros(n, dtype=bool)
    if n == 0:
        return first
    positions = np.arange(n)
    key = _mix(values ^ (groups.astype(np.uint64) * _GOLDEN))
    for salt in _SALTS:
        size = positions.size
        bits = (4 * size).bit_length()  # a table over four times the size: few collisions
        slot = ((key * salt) >> np.uint64(64 - bits)).astype(np.intp)
        local = np.arange(size, dtype=np.int32)
        table = np.full(1 << bits, size, dtype=np.int32)
        np.minimum.at(table, slot, local)  # positions are ascending: the least local index is the first
        least = table[slot]
        settled = (values[least] == values) & (groups[least] == groups)
        first[positions[settled & (least == local)]] = True
        rest = ~settled
        positions, values, groups, key = positions[rest], values[rest], groups[rest], key[rest]
        if positions.size == 0:
            return first
    order = np.lexsort((positions, values, groups))  # by group, value, position
    new = np.ones(order.size, dtype=bool)
    values, groups = values[order], groups[order]
    new[1:] = (values[1:] != values[:-1]) | (groups[1:] != groups[:-1])
    first[positions[order[new]]] = True
    return first


# A byte b → eight bytes, byte m holding bit 7-m of b (np.unpackbits order). Adding these
# words adds eight bit counts at once, exactly while no count passes 255.
_SPREAD = np.array([sum(((b >> (7 - m)) & 1) << (8 * m) for m in range(8)) for b in range(256)], dtype="<u8")
_SPREAD_LIMIT = 255


def _segment_bit_counts(hashes: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``_bit_counts`` of every segment ``hashes[starts[i]:starts[i + 1]]`` (the last one runs
    to the end; no segment may be empty): an int32 array of shape (segments, 64)."""
    columns = np.ascontiguousarray(_bytes_le(hashes).reshape(-1, 8).T)  # (8, n): byte k of each hash
    spread = _SPREAD[columns]  # (8, n) words of 0/1 bytes
    pieces = np.union1d(starts, np.arange(0, hashes.size, _SPREAD_LIMIT))  # no piece over 255 long
    sums = np.add.reduceat(spread, pieces, axis=1)  # (8, pieces), native byte order
    counts = np.ascontiguousarray(sums.T).astype("<u8", copy=False).view(np.uint8).reshape(-1, 64)  # (pieces, 64)
    return np.add.reduceat(counts, np.searchsorted(pieces, starts), axis=0, dtype=np.int32)


def simhash_many(texts: list[str]) -> list[int]:
    """``[_simhash_normalized(t) for t in texts]`` (texts already normalized), with a few
    numpy calls per batch of texts instead of a dozen per text: for short texts the calls,
    not the arithmetic, were the cost.

    The texts' code points are laid end to end and the 3-grams that straddle two texts are
    dropped; ``first_occurrences`` keeps each text's distinct 3-grams; the votes are counted
    per text segment.
    """
    values: list[int] = []
    for part in batches([len(t) for t in texts], BATCH_CHARS):
        values.extend(_simhash_batch(texts[part]))
    return values


def _simhash_batch(texts: list[str]) -> list[int]:
    if not texts:
        return []
    if any(len(t) < 3 for t in texts):  # empty or zero-padded; never from record_fingerprints_many
        return [_simhash_normalized(t) for t in texts]
    lengths = np.fromiter(map(len, texts), dtype=np.intp, count=len(texts))
    keys = _shingle_keys(_codepoints("".join(texts)))
    ends = np.cumsum(lengths)
    straddling = np.concatenate([ends[:-1] - 2, ends[:-1] - 1])
    keep = np.ones(keys.size, dtype=bool)
    keep[straddling] = False
    hashes = _mix(keys[keep])
    rows = np.repeat(np.arange(len(texts), dtype=np.intp), lengths - 2)
    distinct = first_occurrences(hashes, rows)  # each distinct 3-gram of a text votes once
    hashes, rows = hashes[distinct], rows[distinct]
    sizes = np.bincount(rows, minlength=len(texts))
    starts = np.concatenate([[0], np.cumsum(sizes[:-1])])
    votes = _segment_bit_counts(hashes, starts) > (sizes // 2)[:, None]  # strict majority; a tie votes 0
    return np.packbits(votes, axis=1).view("<i8").ravel().tolist()


# --------------------------------------------------------------------------- index


class NearDuplicateIndex:
    """Finds an indexed fingerprint within ``max_distance`` bits of a query.

    The 64 bits are cut into ``max_distance + 1`` bands (4 bands of 16 bits for the default
    3). Fingerprints within the distance share at least one band exactly, so only the
    entries filed under one of the query's band values are compared.
    """

    def __init__(self, max_distance: int = DEFAULT_MAX_DISTANCE):
        if not 0 <= max_distance < 64:
            raise ValueError("max_distance must be between 0 and 63")
        self.max_distance = max_distance
        count = max_distance + 1
        widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
        self._bands: list[tuple[int, int]] = []
        shift = 0
        for width in widths:
            self._bands.append((shift, (1 << width) - 1))
            shift += width
        self._tables: list[dict[int, list[tuple[int, int, object]]]] = [{} for _ in self._bands]
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, key, fingerprint: int) -> None:
        fp = fingerprint & _MASK64
        entry = (fp, self._size, key)
        for table, (shift, mask) in zip(self._tables, self._bands):
            table.setdefault((fp >> shift) & mask, []).append(entry)
        self._size += 1

    def query(self, fingerprint: int, max_distance: int | None = None) -> object | None:
        """Key of the closest indexed fingerprint within ``max_distance`` (default: the
        index's; it cannot exceed it), the earliest added on a tie; else None."""
        found = self.query_with_distance(fingerprint, max_distance)
        return None if found is None else found[0]

    def query_with_distance(self, fingerprint: int, max_distance: int | None = None) -> tuple[object, int] | None:
        """``(key, distance)`` of the closest indexed fingerprint, or None."""
        limit = self.max_distance if max_distance is None else max_distance
        if not 0 <= limit <= self.max_distance:
            raise ValueError(f"max_distance must be between 0 and {self.max_distance} for this index")
        fp = fingerprint & _MASK64
        best: tuple[int, int, object] | None = None
        for table, (shift, mask) in zip(self._tables, self._bands):
            for other, order, key in table.get((fp >> shift) & mask, ()):
                distance = (fp ^ other).bit_count()
                if distance <= limit and (best is None or (distance, order) < best[:2]):
                    best = (distance, order, key)
        return None if best is None else (best[2], best[0])
