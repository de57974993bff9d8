"""What makes signing cheaper must not change a signature: the permutations and pre-mix
computed in signature.py are datasketch's own, signing no longer imports datasketch, and a
Signature pickled as bytes (parse worker -> poller) comes back equal."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.minhash import _fmix
from test_dedup import article  # the same fixture articles

from aggregator.config import DedupSettings
from aggregator.dedup.signature import SEED, Signature, Signer, affine32_permutations, fmix32
from aggregator.service.poll import make_parse_executor, process_document

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("num_perm", [1, 2, 16, 64, 128, 256, 1000])
@pytest.mark.parametrize("seed", [SEED, 0, 7, 2**31])
def test_permutations_are_datasketchs(num_perm: int, seed: int) -> None:
    want = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    got = affine32_permutations(num_perm, seed)
    assert got.dtype == want.dtype == np.uint32 and got.shape == want.shape == (2, num_perm)
    assert np.array_equal(got, want)


def test_fmix32_is_datasketchs() -> None:
    rng = np.random.default_rng(14)
    values = np.concatenate([
        rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32),
        np.array([0, 1, 2, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1], dtype=np.uint32),
    ])  # fmt: skip
    got, want = fmix32(values), _fmix(values, 32)
    assert got.dtype == want.dtype == np.uint32 and np.array_equal(got, want)


def test_signing_does_not_import_datasketch() -> None:
    """A parse worker signs without paying datasketch's (and scipy's) import."""
    code = (
        "import sys\n"
        "from aggregator.config import DedupSettings\n"
        "from aggregator.dedup.signature import Signer\n"
        "sig = Signer(DedupSettings()).sign_many([('Storm closes bridge', 'the river rose ' * 40)])\n"
        "assert sig[0].size > 0, sig\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('datasketch', 'scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def assert_same(got: Signature, want: Signature) -> None:
    assert (got.kind, got.size, got.lede_size) == (want.kind, want.size, want.lede_size)
    assert got.full.dtype == want.full.dtype == np.uint32 and np.array_equal(got.full, want.full)
    if want.lede is None:
        assert got.lede is None
    else:
        assert got.lede is not None and got.lede.dtype == np.uint32
        assert np.array_equal(got.lede, want.lede)


def test_signatures_pickle_as_bytes_and_come_back_equal() -> None:
    signer = Signer(DedupSettings())
    pairs = [article(name) for name in ("bridge", "rail_strike")] + [("Storm closes bridge", ""), ("", "")]
    sigs = signer.sign_many(pairs)
    assert {s.lede is None for s in sigs} == {True, False}  # both shapes
    for sig in sigs:
        blob = pickle.dumps(sig, protocol=pickle.HIGHEST_PROTOCOL)
        assert b"numpy" not in blob  # bytes, not numpy's array pickle
        assert_same(pickle.loads(blob), sig)


def test_a_parse_worker_hands_back_the_same_signatures() -> None:
    """The real hand-off: process_document in a worker process of make_parse_executor."""
    body = (REPO / "tests" / "data" / "rss20.xml").read_bytes()
    headers = {"content-type": "application/rss+xml"}
    now = datetime(2026, 12, 1, tzinfo=UTC)
    here = process_document(body, headers, now, DedupSettings())
    assert here.signatures and not here.feed.error
    pool = make_parse_executor(1)
    try:
        there = pool.submit(process_document, body, headers, now, DedupSettings()).result(timeout=120)
    finally:
        pool.shutdown()
    assert there.signatures.keys() == here.signatures.keys()
    for key, sig in here.signatures.items():
        assert_same(there.signatures[key], sig)
