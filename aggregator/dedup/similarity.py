"""Comparing two signatures: Jaccard estimates, containment for truncated copies, and which
cluster an item joins given its verified matches. Pure functions."""

from __future__ import annotations

import numpy as np

from ..config import DedupSettings
from .signature import KIND_CHARS, Signature

# ---------------------------------------------------------------- verification


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two MinHash signatures."""
    return float(np.count_nonzero(a == b)) / len(a)


def containment(j: float, size_a: int, size_b: int) -> float:
    """Estimated share of the smaller set inside the larger, from Jaccard and set sizes:
    |A∩B| = J(|A|+|B|)/(1+J)."""
    smaller = min(size_a, size_b)
    if smaller == 0:
        return 0.0
    return min(1.0, j * (size_a + size_b) / ((1 + j) * smaller))


def similarity(a: Signature, b: Signature, settings: DedupSettings) -> float | None:
    """How alike two items are if they count as copies of one story, else None.

    Word items: full-text Jaccard >= threshold; or, for truncated copies, ledes alike
    (Jaccard >= lede_threshold) and the shorter text mostly contained in the longer
    (containment >= containment). Short items: Jaccard >= short_threshold, and only
    with each other. See `match_rank` for how the two kinds of evidence compare.
    """
    if a.kind != b.kind:
        return None
    lede = b.lede if b.lede is not None else np.zeros_like(a.full[:1])
    sims = similarities(
        a, np.array([b.size]), np.array([b.lede_size]), b.full[None], lede[None], settings
    )
    return None if np.isnan(sims[0]) else float(sims[0])


def similarities(
    sig: Signature,
    sizes: np.ndarray,
    lede_sizes: np.ndarray,
    full: np.ndarray,
    lede: np.ndarray,
    settings: DedupSettings,
) -> np.ndarray:
    """`similarity` of `sig` against many signatures of the same kind at once (rows of
    `full`/`lede`); NaN where they are not copies."""
    j = np.count_nonzero(full == sig.full, axis=1) / full.shape[1]
    out = np.full(len(j), np.nan)
    if sig.kind == KIND_CHARS:
        keep = j >= settings.short_threshold
        if sig.lede is not None and keep.any():  # rows signed before the word sets have none
            shared = np.isin(lede[keep], sig.lede[: sig.lede_size]).sum(axis=1)
            words_in = shared / np.maximum(np.minimum(lede_sizes[keep], sig.lede_size), 1)
            keep[keep] = (lede_sizes[keep] == 0) | (words_in >= SHORT_WORDS_CONTAINED)
        out[keep] = j[keep]
        return out
    strong = j >= settings.threshold
    out[strong] = j[strong]
    weak = ~strong
    if sig.lede is None or not weak.any():
        return out
    jl = np.count_nonzero(lede[weak] == sig.lede, axis=1) / lede.shape[1]
    if not (jl >= settings.lede_threshold).any():  # the usual false candidate stops here
        return out
    size, lsize = sizes[weak], lede_sizes[weak]
    smaller = np.maximum(np.minimum(size, sig.size), 1)
    full_c = np.minimum(1.0, j[weak] * (size + sig.size) / ((1 + j[weak]) * smaller))
    lede_smaller = np.maximum(np.minimum(lsize, sig.lede_size), 1)
    lede_c = np.minimum(1.0, jl * (lsize + sig.lede_size) / ((1 + jl) * lede_smaller))
    # the lede stands for the whole text only when the shorter text is about a lede long
    lede_counts = np.minimum(size, sig.size) <= 1.2 * np.maximum(lsize, sig.lede_size)
    c = np.maximum(full_c, np.where(lede_counts, lede_c, 0.0))
    ok = (jl >= settings.lede_threshold) & (c >= settings.containment)
    weak_out = np.full(len(c), np.nan)
    weak_out[ok] = -c[ok]
    out[weak] = weak_out
    return out


# Short items (a title, a line) are one story only when (nearly) all words of the shorter
# are in the other: "Surgical Management of Adult Sleep Apnea" and "Assessment of Adult
# Sleep Apnea" share most of their characters (char 5-gram Jaccard >= 0.6) but not the
# word that matters (4 of 5 words: 0.8). 0.9 lets one word in ten differ ("three-day" /
# "3-Day"). Exact: a short item's distinct word hashes are kept in its lede slot, padded
# with signature.WORD_PAD (an item with more distinct words than lede_num_perm keeps none).
SHORT_WORDS_CONTAINED = 0.9


def match_rank(sim: float) -> tuple[bool, float]:
    """Sort key of a verified match. `similarity` returns containment matches as negative
    numbers: a copy matched on its whole text (Jaccard) outranks one matched only by
    containment, because a short summary is contained in every longer version of the
    story, including ones that belong to another cluster."""
    return (sim >= 0, abs(sim))


def choose_cluster(matches: list[tuple[int, float]], clusters: dict[int, int]) -> tuple[int, float] | None:
    """The cluster an item joins: the one holding its most similar verified copy (ties go
    to the older cluster). Returns (cluster id, similarity) or None for a new story.

    Clusters never merge: an item that resembles two clusters joins one, so a single
    bridging item cannot chain two different stories together."""
    best: tuple[int, float] | None = None
    for row, sim in matches:
        cluster = clusters[row]
        if (
            best is None
            or match_rank(sim) > match_rank(best[1])
            or (match_rank(sim) == match_rank(best[1]) and cluster < best[0])
        ):
            best = (cluster, sim)
    return None if best is None else (best[0], abs(best[1]))
