"""Clustering quality metrics: B-cubed and pairwise precision / recall against gold labels.

Both are computed from the contingency table (predicted cluster x gold label), so they
run in time linear in the number of items, and never enumerate pairs.

Conventions: the items scored are the keys of `gold`. An item missing from `predicted`
counts as a singleton (it was joined with nothing). A predicted cluster id is only an
identity, never compared with gold labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Scores:
    """Quality of one predicted clustering against gold labels.

    `pairs_joined` counts predicted same-cluster pairs; `pairs_correct` those that share a
    gold label; `pairs_gold` all same-label pairs. Pairwise precision is 1.0 when nothing is
    joined, pairwise recall 1.0 when the gold labels have no pairs (nothing to find).
    """

    items: int
    b3_precision: float
    b3_recall: float
    b3_f1: float
    pair_precision: float
    pair_recall: float
    pairs_joined: int
    pairs_correct: int
    pairs_gold: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON output."""
        return asdict(self)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score(predicted: Mapping[Hashable, Hashable], gold: Mapping[Hashable, Hashable]) -> Scores:
    """B-cubed and pairwise scores of `predicted` (item -> cluster) against `gold` (item -> label).

    B-cubed (Bagga & Baldwin 1998): for each item, precision is the share of its predicted
    cluster that has its gold label, recall the share of its gold label's items found in its
    predicted cluster; both are averaged over items.
    """
    singleton = object()
    cluster_of = {
        item: (predicted[item],) if item in predicted else (singleton, item) for item in gold
    }
    cluster_size = Counter(cluster_of.values())
    label_size = Counter(gold.values())
    cells = Counter((cluster_of[item], gold[item]) for item in gold)
    n = len(gold)
    if n == 0:
        return Scores(0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0, 0)
    b3_p = sum(k * k / cluster_size[c] for (c, _), k in cells.items()) / n
    b3_r = sum(k * k / label_size[lab] for (_, lab), k in cells.items()) / n
    joined = sum(_pairs(k) for k in cluster_size.values())
    correct = sum(_pairs(k) for k in cells.values())
    gold_pairs = sum(_pairs(k) for k in label_size.values())
    return Scores(
        items=n,
        b3_precision=b3_p,
        b3_recall=b3_r,
        b3_f1=_f1(b3_p, b3_r),
        pair_precision=correct / joined if joined else 1.0,
        pair_recall=correct / gold_pairs if gold_pairs else 1.0,
        pairs_joined=joined,
        pairs_correct=correct,
        pairs_gold=gold_pairs,
    )
