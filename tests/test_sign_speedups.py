"""What makes signing cheaper must not change a signature: the permutations and pre-mix
computed in signature.py are datasketch's own, and signing no longer imports datasketch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.minhash import _fmix

from aggregator.dedup.signature import SEED, affine32_permutations, fmix32

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
