"""Near-duplicate detection for training examples: MinHash signatures + LSH banding.

Two examples are near duplicates when the Jaccard similarity of their word 3-gram sets
(lower-cased, whitespace collapsed, every message's role and content) is at least
``threshold`` (0.8 by default), as estimated from 64 MinHash values. Banding (8 bands of 8 rows)
makes a lookup cost a few dict probes instead of a scan; a candidate is confirmed on its full
signature, so a reported pair really agrees on at least ``threshold`` of its MinHash values.

Why word 3-grams and not characters: generated data (syllo puzzles) shares most of its template
text; character n-grams would call every puzzle a near duplicate of every other, while word
3-grams change wherever a term changes.

Why not the ``datasketch`` package: it pulls in scipy for what is here one vectorised numpy
expression, and we need a hard memory bound (``capacity``) rather than its growing index.

Memory: about 1 KB per indexed example; past ``capacity`` examples the index stops growing
(later examples are still looked up, just not added) and ``full`` says so.
"""
from __future__ import annotations

import re
import zlib
from typing import Hashable

import numpy as np

_MERSENNE = (1 << 31) - 1  # a*x fits in uint64 for a, x < 2**31: no overflow in the hash family
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def example_text(record: dict) -> str:
    """The text two examples are compared on: ``role: content`` per message (or the raw text)."""
    if "messages" in record:
        return "\n".join(f"{m['role']}: {m['content']}" for m in record["messages"])
    return str(record.get("text", ""))


def shingles(text: str, k: int = 3) -> set[str]:
    """Word k-grams of the lower-cased text; a text shorter than k words is one shingle."""
    words = _TOKEN.findall(text.lower())
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity (tests and small sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDupIndex:
    """An index of MinHash signatures. ``query`` returns the best indexed match at or above the
    threshold; ``add`` stores a signature under a caller's key (e.g. ``(file, line)``)."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, bands: int = 8, shingle_words: int = 3,
                 capacity: int = 100_000, seed: int = 1):
        if num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands = bands
        self.rows = num_perm // bands
        self.shingle_words = shingle_words
        self.capacity = capacity
        rng = np.random.RandomState(seed)
        self._a = rng.randint(1, _MERSENNE, size=num_perm, dtype=np.uint64)
        self._b = rng.randint(0, _MERSENNE, size=num_perm, dtype=np.uint64)
        self._tables: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self._sigs: list[np.ndarray] = []
        self._keys: list[Hashable] = []
        self.full = False

    def __len__(self) -> int:
        return len(self._keys)

    def signature(self, text: str) -> np.ndarray:
        """MinHash signature (``num_perm`` uint32 values) of ``text``'s shingles."""
        sh = shingles(text, self.shingle_words)
        # surrogatepass: a lone surrogate is an anomaly to report, not a reason to crash
        x = np.fromiter((zlib.crc32(s.encode("utf-8", "surrogatepass")) % _MERSENNE for s in sh),
                        dtype=np.uint64, count=len(sh))
        h = (np.outer(x, self._a) + self._b) % _MERSENNE  # (shingles, num_perm)
        return h.min(axis=0).astype(np.uint32)

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def query(self, sig: np.ndarray) -> tuple[Hashable, float] | None:
        """(key, estimated similarity) of the most similar indexed example at or above the
        threshold, or None."""
        seen: set[int] = set()
        best: tuple[Hashable, float] | None = None
        for table, bk in zip(self._tables, self._band_keys(sig)):
            for idx in table.get(bk, ()):
                if idx in seen:
                    continue
                seen.add(idx)
                sim = float(np.mean(self._sigs[idx] == sig))
                if sim >= self.threshold and (best is None or sim > best[1]):
                    best = (self._keys[idx], sim)
        return best

    def add(self, key: Hashable, sig: np.ndarray) -> bool:
        """Index ``sig`` under ``key``; False (and ``full`` set) once ``capacity`` is reached."""
        if len(self._keys) >= self.capacity:
            self.full = True
            return False
        idx = len(self._keys)
        self._keys.append(key)
        self._sigs.append(sig)
        for table, bk in zip(self._tables, self._band_keys(sig)):
            table.setdefault(bk, []).append(idx)
        return True


__all__ = ["NearDupIndex", "example_text", "shingles", "jaccard"]
