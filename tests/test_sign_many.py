"""Signer.sign_many: the batch path must give exactly what sign() gives, item by item.

sign() is the reference; every test compares every field of both signatures, over the
hand-written articles in tests/data/dedup/ and over inputs picked to hit each branch of
sign() (short items, title-only items, scripts, characters beyond the BMP, long texts).
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from test_dedup import article  # the same fixture articles

from aggregator.config import DedupSettings
from aggregator.dedup.shingles import BMP, SEVERAL, fold_table
from aggregator.dedup.signature import BATCH_CHARS, KIND_CHARS, MINHASH_BLOCK, Signature, Signer

DATA = Path(__file__).parent / "data" / "dedup"
SETTINGS = DedupSettings()
NAMES = sorted(p.stem for p in DATA.glob("*.txt"))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(SETTINGS)


def assert_same(got: Signature, want: Signature) -> None:
    assert (got.kind, got.size, got.lede_size) == (want.kind, want.size, want.lede_size)
    assert type(got.size) is type(want.size) and type(got.lede_size) is type(want.lede_size)
    assert got.full.dtype == want.full.dtype == np.uint32
    assert got.full.shape == want.full.shape and np.array_equal(got.full, want.full)
    if want.lede is None:
        assert got.lede is None
    else:
        assert got.lede is not None and got.lede.dtype == want.lede.dtype
        assert got.lede.shape == want.lede.shape and np.array_equal(got.lede, want.lede)


def check(signer: Signer, pairs: list[tuple[str, str]]) -> int:
    """Compares sign_many with sign() item by item; returns how many items sign_many
    handed to sign() (so a test can tell the batch path really ran)."""
    with mock.patch.object(signer, "sign", wraps=signer.sign) as sign:
        got = signer.sign_many(pairs)
    assert len(got) == len(pairs)
    for (title, text), sig in zip(pairs, got, strict=True):
        assert_same(sig, signer.sign(title, text))
    return sign.call_count


def lorem(n: int, seed: int = 0) -> str:
    """n words of plain English-like text."""
    rng = random.Random(seed)
    vocab = ("the", "council", "said", "on", "monday", "that", "new", "rail", "line", "would")
    return " ".join(rng.choice(vocab) + str(rng.randrange(50)) for _ in range(n))


ARTICLES = [article(name) for name in NAMES]


def test_articles(signer: Signer) -> None:
    assert check(signer, ARTICLES) == 0  # all on the batch path


def test_articles_with_copies_and_truncations(signer: Signer) -> None:
    pairs = []
    for title, body in ARTICLES:
        words = body.split()
        pairs += [(title, body), ("Other headline " + title, body),
                  (title, " ".join(words[:50]) + " …"), (title, " ".join(words[:30]))]  # fmt: skip
    assert check(signer, pairs) == 0


def test_empty_batch(signer: Signer) -> None:
    assert signer.sign_many([]) == []


def test_batch_of_one(signer: Signer) -> None:
    assert check(signer, ARTICLES[:1]) == 0


def test_empty_titles_and_texts(signer: Signer) -> None:
    title, body = ARTICLES[0]
    check(signer, [("", body), (title, ""), ("", ""), (body, ""), ("", title), (" ", " ")])


def test_title_only_items(signer: Signer) -> None:
    # no body words: the lede is the first words of the title
    check(signer, [(lorem(40, 1), ""), (lorem(30, 2), "!!"), (lorem(200, 3), " ")])


def test_short_items_mixed_with_long_ones(signer: Signer) -> None:
    title, body = ARTICLES[1]
    short = [("Storm closes bridge", ""), ("Storm", "closes the bridge for a day"),
             (lorem(10), lorem(14)), ("", lorem(24)), ("", lorem(25))]  # fmt: skip
    pairs = [p for pair in zip(short, ARTICLES * 2, strict=False) for p in pair]
    assert check(signer, pairs + [(title, body)]) == 4  # the four under short_words
    assert signer.sign_many(short)[0].kind == KIND_CHARS


def test_characters_beyond_the_bmp_mixed_in(signer: Signer) -> None:
    title, body = ARTICLES[2]
    pairs = [(title, body), (title + " 🚆", body), (title, body + " 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀x"),
             ("𐐀𐐨 Deseret", body), *ARTICLES[:3]]  # fmt: skip
    assert check(signer, pairs) == 3


def test_items_over_minhash_block_shingles(signer: Signer) -> None:
    # n words give n - 2 shingles: sign() takes the matrix path up to MINHASH_BLOCK
    pairs = [("", lorem(MINHASH_BLOCK + 2, 4)), ("", lorem(MINHASH_BLOCK + 3, 5)),
             ("title", lorem(6000, 6)), *ARTICLES[:2]]  # fmt: skip
    assert check(signer, pairs) == 2


def test_items_longer_than_a_run(signer: Signer) -> None:
    long = lorem(BATCH_CHARS // 5, 7)
    assert len(long) > BATCH_CHARS
    check(signer, [ARTICLES[0], ("x", long), ARTICLES[1], ("", "a " * 40_000)])


def test_punctuation_only(signer: Signer) -> None:
    check(signer, [("...", "!!! ??? --- … — “” ‘’ «» ¿¡ ·"), ARTICLES[0], ("", ". , ; :" * 500)])
    check(signer, [("...", "!!!"), ("", ""), ("", "— –")])  # not one word in the batch


def test_non_latin_scripts(signer: Signer) -> None:
    greek = "Η κυβέρνηση ανακοίνωσε σήμερα νέα μέτρα για την οικονομία ΣΑΣ ΟΔΟΣ " * 6
    cyrillic = "Правительство объявило сегодня новые меры для поддержки экономики " * 6
    cjk = "政府今日宣布了新的经济措施 東京で地震が発生しました 서울 시장 발표 " * 12
    arabic = "أعلنت الحكومة اليوم عن إجراءات جديدة لدعم الاقتصاد الوطني " * 6
    pairs = [("Νέα μέτρα", greek), ("Новые меры", cyrillic), ("新措施", cjk), ("إجراءات", arabic),
             ("Mixed", greek + cyrillic + cjk + arabic), *ARTICLES[:2]]  # fmt: skip
    assert check(signer, pairs) == 0


def test_characters_that_fold_to_several(signer: Signer) -> None:
    # ß -> ss, ﬁ -> fi, İ -> i̇: Python's casefold path, with other items in the same run
    german = "Die Straße wurde gesperrt, die Größe des Schadens ist unklar. " * 8
    pairs = [ARTICLES[0], ("Straßensperre", german), ("ﬁnal İstanbul", lorem(40) + " ﬂ"),
             ARTICLES[1]]  # fmt: skip
    assert check(signer, pairs) == 0


def test_underscores_and_digits(signer: Signer) -> None:
    text = "user_id 42 was_seen at 10:45 on 2026-11-25, price 3.50 £ snake_case_word __x__ " * 8
    check(signer, [("CVE_2026_0001 patched", text), ("", "_ " * 60), ("", "1 2 3 " * 20)])


def test_long_words_cut_at_token_chars(signer: Signer) -> None:
    text = " ".join(("a" * 30 + str(i)) if i % 3 else "b" * 80 for i in range(120))
    check(signer, [("", text), ARTICLES[0]])


def test_fold_table_equals_str_casefold_over_the_bmp() -> None:
    table = fold_table()
    for c in range(BMP):
        folded = chr(c).casefold()
        want = ord(folded) if len(folded) == 1 and ord(folded) < BMP else SEVERAL
        assert table[c] == want, hex(c)


def test_runs_and_blocks_split_anywhere(signer: Signer, monkeypatch) -> None:
    """Small runs and hash blocks: items cut at every kind of boundary (sign() uses the
    same MINHASH_BLOCK, so both change together)."""
    rng = random.Random(3)
    pairs = [(lorem(rng.randrange(12), i), lorem(rng.randrange(150), i + 1)) for i in range(80)]
    monkeypatch.setattr("aggregator.dedup.signature.MINHASH_BLOCK", 64)
    monkeypatch.setattr("aggregator.dedup.signature.BATCH_CHARS", 1500)
    check(signer, pairs + ARTICLES)


@pytest.mark.parametrize(
    "changes",
    [
        {"shingles": "chars"},
        {"lede_num_perm": 256},  # not a prefix of the full permutations
        {"num_perm": 64, "lede_num_perm": 64},
        {"shingle_words": 1},
        {"shingle_words": 5, "lede_words": 5},
        {"short_words": 0},
        {"short_words": 2, "shingle_words": 4, "lede_words": 3},
    ],
)
def test_other_settings(changes: dict) -> None:
    signer = Signer(replace(SETTINGS, **changes))
    rng = random.Random(5)
    pairs = [(lorem(rng.randrange(5), i), lorem(rng.randrange(90), i)) for i in range(30)]
    check(signer, pairs + [("", ""), ("a", ""), ("a b", "c"), *ARTICLES[:3]])


FUZZ_WORDS = (
    "the a of to in and on said minister police city rail strike fire "
    "Straße ﬁnal İzmir ΣΟΦΙΑ σοφός Москва 東京 서울 القاهرة naïve café "
    "😀 🚆 𝔘𝔫𝔦 𐐀x x_y __ 2026 3.5 42 ... — “quoted” (paren) e-mail"
)
FUZZ_VOCAB = [*FUZZ_WORDS.split(), "w" * 30, "w" * 31, "\n", "\t", "  "]


def test_fuzz(signer: Signer) -> None:
    rng = random.Random(20261125)
    pairs = []
    for _ in range(300):
        n = rng.choice([0, 1, 5, 20, 24, 25, 26, 30, 60, 62, 63, 100, 300, 800, rng.randrange(800)])
        text = " ".join(rng.choice(FUZZ_VOCAB) for _ in range(n))
        title = " ".join(rng.choice(FUZZ_VOCAB) for _ in range(rng.randrange(15)))
        if rng.random() < 0.6:  # mostly without emoji, like real feeds
            title, text = ("".join(c for c in s if c < "\U00010000") for s in (title, text))
        pairs.append((title, text))
    at = batched = 0
    while at < len(pairs):
        size = rng.randrange(1, 60)
        batched += min(size, len(pairs) - at) - check(signer, pairs[at : at + size])
        at += size
    assert batched > 100
