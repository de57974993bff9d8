"""bench/metrics.py on tiny clusterings whose scores are computed by hand in the comments."""

import importlib.util
import sys
from pathlib import Path

import pytest

# bench/ is a folder of scripts, not an installed package: load the module from its file.
_spec = importlib.util.spec_from_file_location(
    "bench_metrics", Path(__file__).resolve().parents[1] / "bench" / "metrics.py"
)
assert _spec and _spec.loader
metrics = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = metrics  # dataclasses look their module up there
_spec.loader.exec_module(metrics)


def test_mixed_clustering():
    # gold: {a b c} {d e}; predicted: {a b} {c d e}
    gold = {"a": "L1", "b": "L1", "c": "L1", "d": "L2", "e": "L2"}
    pred = {"a": 1, "b": 1, "c": 2, "d": 2, "e": 2}
    s = metrics.score(pred, gold)
    # B3 precision per item: a 2/2, b 2/2, c 1/3, d 2/3, e 2/3 -> (11/3)/5
    assert s.b3_precision == pytest.approx(11 / 15)
    # B3 recall per item: a 2/3, b 2/3, c 1/3, d 2/2, e 2/2 -> (11/3)/5
    assert s.b3_recall == pytest.approx(11 / 15)
    assert s.b3_f1 == pytest.approx(11 / 15)
    # joined pairs: ab, cd, ce, de = 4; correct: ab, de = 2; gold pairs: ab ac bc de = 4
    assert (s.pairs_joined, s.pairs_correct, s.pairs_gold) == (4, 2, 4)
    assert s.pair_precision == pytest.approx(0.5)
    assert s.pair_recall == pytest.approx(0.5)
    assert s.items == 5


def test_everything_in_one_cluster():
    # gold: three singletons; predicted: one cluster of three
    s = metrics.score({"a": 0, "b": 0, "c": 0}, {"a": 1, "b": 2, "c": 3})
    assert s.b3_precision == pytest.approx(1 / 3)  # each item: 1 of 3 right
    assert s.b3_recall == pytest.approx(1.0)
    assert s.b3_f1 == pytest.approx(0.5)  # 2 * (1/3) / (4/3)
    assert s.pair_precision == 0.0  # 3 pairs joined, none right
    assert s.pair_recall == 1.0  # no gold pairs: nothing to find


def test_all_singletons_against_one_story():
    # gold: one story of four; predicted: four singletons
    gold = dict.fromkeys("abcd", "S")
    s = metrics.score({k: k for k in gold}, gold)
    assert s.b3_precision == 1.0
    assert s.b3_recall == pytest.approx(0.25)
    assert s.pair_precision == 1.0  # nothing joined: no false merges
    assert s.pair_recall == 0.0
    assert s.pairs_gold == 6


def test_perfect_even_if_cluster_ids_collide_with_labels():
    gold = {"a": "x", "b": "x", "c": "y"}
    pred = {"a": "y", "b": "y", "c": "x"}  # ids are identities only
    s = metrics.score(pred, gold)
    assert (s.b3_precision, s.b3_recall, s.pair_precision, s.pair_recall) == (1, 1, 1, 1)


def test_missing_items_are_separate_singletons():
    gold = {"a": "S", "b": "S", "c": "S"}
    s = metrics.score({"a": 7}, gold)  # b and c never came back
    assert s.pairs_joined == 0  # two missing items are not merged with each other
    assert s.b3_recall == pytest.approx(1 / 3)
    # items only in `predicted` are ignored
    assert metrics.score({"a": 1, "b": 1, "zz": 1}, {"a": 1, "b": 1}).b3_precision == 1.0


def test_empty():
    s = metrics.score({}, {})
    assert s.items == 0 and s.b3_f1 == 1.0
