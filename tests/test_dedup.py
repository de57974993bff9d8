"""The pure dedup core: shingles, signatures, similarity rules, the LSH index, cluster choice.

No database and no network: plain strings in, plain values out. Articles are the
hand-written fixtures in tests/data/dedup/ (see its README.md).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from aggregator.config import DedupSettings
from aggregator.dedup.index import DedupIndex
from aggregator.dedup.shingles import char_shingles, hash_words, word_hashes, word_shingles, words
from aggregator.dedup.signature import KIND_CHARS, KIND_WORDS, SEED, Signature, Signer
from aggregator.dedup.similarity import choose_cluster, containment, jaccard, similarity
from aggregator.ingest.normalize import strip_boilerplate

DATA = Path(__file__).parent / "data" / "dedup"
SETTINGS = DedupSettings()
DAY = 86400


def article(name: str) -> tuple[str, str]:
    """(headline, body) of a fixture article; paragraphs joined by one newline, as
    normalize.html_to_text leaves them."""
    headline, _, body = (DATA / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    return headline.strip(), "\n".join(paragraphs)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(SETTINGS)


def datasketch_minhash(shingles: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=seed, scheme="affine32", hashfunc=lambda x: x)
    m.update_batch(shingles)
    return m.hashvalues


def truncated(body: str, n_words: int, marker: str) -> str:
    return " ".join(body.split()[:n_words]) + marker


# ---------------------------------------------------------------- signing = datasketch


@pytest.mark.parametrize("name", ["bridge", "market_wrap_1", "match_2"])
def test_signature_equals_datasketch_update_batch(signer: Signer, name: str) -> None:
    title, body = article(name)
    sig = signer.sign(title, body)
    full = word_shingles(words(title) + words(body), SETTINGS.shingle_words)
    lede = word_shingles(words(body)[: SETTINGS.lede_words], SETTINGS.shingle_words)
    assert sig.kind == KIND_WORDS
    assert sig.size == len(full) and sig.lede_size == len(lede)
    assert np.array_equal(sig.full, datasketch_minhash(full, SETTINGS.num_perm, SEED))
    assert sig.lede is not None
    # the lede is signed with the first lede_num_perm of the same permutations
    lede_minhash = datasketch_minhash(lede, SETTINGS.num_perm, SEED)[: SETTINGS.lede_num_perm]
    assert np.array_equal(sig.lede, lede_minhash)


def test_short_signature_equals_datasketch(signer: Signer) -> None:
    title = "Harbor Street bridge to close for eight months"
    sig = signer.sign(title, "")
    shingles = char_shingles(title + " ", SETTINGS.short_chars)
    assert sig.kind == KIND_CHARS
    assert np.array_equal(sig.full, datasketch_minhash(shingles, SETTINGS.num_perm, SEED))
    # its lede slot holds its distinct words, exactly (sorted word hashes, then padding)
    assert sig.lede_size == len(set(words(title))) == 8
    assert np.all(np.diff(sig.lede[: sig.lede_size].astype(np.int64)) > 0)
    assert np.all(sig.lede[sig.lede_size :] == 0xFFFFFFFF)


@pytest.mark.parametrize("num_perm", [16, 64, 256])
def test_other_permutation_counts_equal_datasketch(num_perm: int) -> None:
    settings = replace(SETTINGS, num_perm=num_perm)
    title, body = article("rail_strike")
    sig = Signer(settings).sign(title, body)
    full = word_shingles(words(title) + words(body), 3)
    assert len(sig.full) == num_perm
    assert np.array_equal(sig.full, datasketch_minhash(full, num_perm, SEED))


def test_empty_text_signs_like_an_empty_datasketch_minhash(signer: Signer) -> None:
    sig = signer.sign("", "")
    empty = MinHash(num_perm=SETTINGS.num_perm, seed=SEED, scheme="affine32")
    assert sig.size == 0
    assert np.array_equal(sig.full, empty.hashvalues)


def test_signature_blob_round_trip(signer: Signer) -> None:
    sig = signer.sign(*article("bridge"))
    full, lede = sig.to_blobs()
    back = Signature.from_blobs(sig.kind, sig.size, sig.lede_size, full, lede)
    assert len(full) == 4 * SETTINGS.num_perm
    assert np.array_equal(back.full, sig.full) and np.array_equal(back.lede, sig.lede)
    short = signer.sign("Bridge closes", "")
    back = Signature.from_blobs(KIND_CHARS, short.size, short.lede_size, *short.to_blobs())
    assert back.lede_size == 2 and np.array_equal(back.lede, short.lede)
    assert Signature.from_blobs(KIND_CHARS, short.size, 0, short.to_blobs()[0], None).lede is None


# ---------------------------------------------------------------- shingles


def test_words_casefold_and_drop_punctuation() -> None:
    assert words("The  Bridge, CLOSED! (for 8 months)") == ["the", "bridge", "closed", "for", "8", "months"]


def test_word_hashes_equal_hashing_the_regex_words_over_the_whole_bmp() -> None:
    # the fast tokenizer must give the hashes stored signatures were made with
    chars = "".join(chr(c) for c in range(0x10000))
    for start in range(0, len(chars), 700):
        chunk = chars[start : start + 700]
        text = " ".join(chunk[i : i + 9] for i in range(0, len(chunk), 9))
        assert np.array_equal(word_hashes(text), hash_words(words(text))), hex(start)
    for text in ["", " ,.", "Straße ǅ ﬁ İstanbul", "a" * 40 + " b", "emoji \U0001F600 x_y", "x\ud800y"]:
        assert np.array_equal(word_hashes(text), hash_words(words(text))), text


def test_title_and_body_words_stay_apart(signer: Signer) -> None:
    # signing hashes "title body" in one pass: a title's last word must not join the body's first
    body = " ".join(f"word{i}" for i in range(40))
    split = signer.sign("Bridge", body)
    assert np.array_equal(split.full, signer.sign("", "Bridge " + body).full)
    assert not np.array_equal(split.full, signer.sign("", "Bridge" + body).full)
    assert np.array_equal(split.lede, signer.sign("Other title", body).lede)  # the body's first words


def test_word_shingles_count_distinct_trigrams() -> None:
    tokens = words("a b c d a b c d")  # trigrams: abc bcd cda dab abc bcd -> 4 distinct
    sh = word_shingles(tokens, 3)
    assert sh.dtype == np.uint32
    assert len(sh) == 4
    assert len(np.unique(sh)) == len(sh)


def test_word_shingles_are_order_sensitive_within_the_gram() -> None:
    assert not set(word_shingles(["a", "b", "c"], 3)) & set(word_shingles(["c", "b", "a"], 3))


def test_word_shingles_of_short_and_empty_input() -> None:
    assert len(word_shingles([], 3)) == 0
    assert len(word_shingles(["one", "two"], 3)) == 1  # the whole text is one shingle
    assert not np.array_equal(word_shingles(["one", "two"], 3), word_shingles(["two", "one"], 3))


def test_one_changed_word_changes_at_most_n_shingles() -> None:
    _, body = article("bridge")
    tokens = words(body)
    changed = tokens.copy()
    changed[100] = "ferry"
    a, b = set(word_shingles(tokens, 3).tolist()), set(word_shingles(changed, 3).tolist())
    assert 1 <= len(a - b) <= 3


def test_char_shingles_normalise_case_spaces_and_punctuation() -> None:
    a = char_shingles("Bridge to CLOSE,   for repairs!", 5)
    b = char_shingles("bridge to close for repairs", 5)
    assert np.array_equal(a, b)
    assert len(char_shingles("abc", 5)) == 1  # shorter than n: one shingle
    assert len(char_shingles("...", 5)) == 0
    assert len(char_shingles("abcdefg", 5)) == 3


# ---------------------------------------------------------------- sign(): word vs char items


def test_items_below_short_words_use_char_shingles(signer: Signer) -> None:
    short = signer.sign("Rail workers vote for three-day strike", "Union says Easter walkout is on.")
    assert short.kind == KIND_CHARS and short.lede_size == 13  # its words, not a lede
    long = signer.sign(*article("rail_strike"))
    assert long.kind == KIND_WORDS and long.lede is not None


# ---------------------------------------------------------------- similarity rules


def make_sig(kind: int, equal: int, *, n: int = 128, size: int = 300, lede_equal: int | None = None,
             lede_size: int = 58, base: int = 0) -> Signature:  # fmt: skip
    """A signature sharing exactly `equal` of `n` values (and `lede_equal` of 64 lede
    values) with make_sig(kind, n, ...) built from the same base."""
    full = np.arange(base, base + n, dtype=np.uint32)
    full[equal:] += np.uint32(1_000_000)
    lede = None
    if kind == KIND_WORDS:
        lede = np.arange(base, base + 64, dtype=np.uint32)
        if lede_equal is not None:
            lede[lede_equal:] += np.uint32(1_000_000)
    return Signature(kind, size, full, lede_size if lede is not None else 0, lede)


def test_identical_items_have_similarity_one(signer: Signer) -> None:
    sig = signer.sign(*article("library_fire"))
    assert similarity(sig, sig, SETTINGS) == 1.0


def test_full_text_threshold_is_inclusive() -> None:
    ref = make_sig(KIND_WORDS, 128)
    at = make_sig(KIND_WORDS, 64, lede_equal=0)  # Jaccard 0.5, ledes unlike
    below = make_sig(KIND_WORDS, 63, lede_equal=0)
    assert similarity(ref, at, SETTINGS) == pytest.approx(0.5)
    assert similarity(ref, below, SETTINGS) is None


def test_word_and_char_items_are_never_compared() -> None:
    words_sig = make_sig(KIND_WORDS, 128)
    chars_sig = replace(make_sig(KIND_CHARS, 128), lede=None)
    assert jaccard(words_sig.full, chars_sig.full) == 1.0
    assert similarity(words_sig, chars_sig, SETTINGS) is None
    assert similarity(chars_sig, words_sig, SETTINGS) is None


def test_short_items_need_the_short_threshold() -> None:
    ref = make_sig(KIND_CHARS, 128)
    needed = int(np.ceil(SETTINGS.short_threshold * 128))
    assert similarity(ref, make_sig(KIND_CHARS, needed), SETTINGS) == pytest.approx(needed / 128)
    assert similarity(ref, make_sig(KIND_CHARS, needed - 1), SETTINGS) is None
    # above the word threshold but below the short one: still not a copy
    assert SETTINGS.threshold < (needed - 1) / 128 < SETTINGS.short_threshold


def test_containment_formula() -> None:
    # |A|=100, |B|=40, B inside A: J = 40/100 -> containment of B in A is 1
    assert containment(0.4, 100, 40) == pytest.approx(1.0)
    assert containment(0.0, 100, 40) == 0.0
    assert containment(0.5, 0, 40) == 0.0
    assert containment(1.0, 10, 10) == 1.0


def test_syndicated_copy_with_new_headline_and_boilerplate(signer: Signer) -> None:
    title, body = article("bridge")
    original = signer.sign(title, body)
    copy_text = strip_boilerplate(
        "By Staff Reporter\n" + body
        + "\nThe post Bridge shut until November appeared first on Quay Times."
        + "\nLeave a Reply\nYour email address will not be published."
    )  # fmt: skip
    copy = signer.sign("Bridge shut until November: what drivers need to know", copy_text)
    sim = similarity(copy, original, SETTINGS)
    assert sim is not None and sim >= SETTINGS.threshold


@pytest.mark.parametrize("marker", [" …", " […] Read more", "..."])
def test_truncated_summary_is_a_copy_through_the_lede(signer: Signer, marker: str) -> None:
    title, body = article("bridge")
    full = signer.sign(title, body)
    summary = signer.sign(title, strip_boilerplate(truncated(body, 40, marker)))
    assert summary.kind == KIND_WORDS
    assert jaccard(summary.full, full.full) < SETTINGS.threshold  # the Jaccard path misses it
    sim = similarity(summary, full, SETTINGS)
    # containment matches come back negative, so they rank below Jaccard matches
    assert sim is not None and sim < 0 and -sim >= SETTINGS.containment
    assert similarity(full, summary, SETTINGS) == sim  # symmetric


def test_shared_lede_with_a_different_story_after_it_is_not_a_copy(signer: Signer) -> None:
    """Two long texts whose first 60 words agree but whose rest differs: the containment
    path only applies when the shorter text is about lede-sized."""
    _, bridge = article("bridge")
    _, strike = article("rail_strike")
    lede = " ".join(bridge.split()[:70])
    a = signer.sign("Bridge closing", lede + "\n" + bridge)
    b = signer.sign("Bridge closing", lede + "\n" + strike)
    assert jaccard(a.lede, b.lede) >= SETTINGS.lede_threshold
    assert similarity(a, b, SETTINGS) is None


@pytest.mark.parametrize(
    "a, b",
    [
        ("market_wrap_1", "market_wrap_2"),  # same template, different numbers
        ("match_1", "match_2"),  # same template, different teams
        ("library_fire", "library_fire_other"),  # one event, two write-ups
        ("bridge", "rail_strike"),  # unrelated
    ],
)
def test_negatives_are_not_copies(signer: Signer, a: str, b: str) -> None:
    assert similarity(signer.sign(*article(a)), signer.sign(*article(b)), SETTINGS) is None


def test_short_headline_variants(signer: Signer) -> None:
    ref = signer.sign("Rail workers vote for three-day strike over driverless trains plan", "")
    variant = signer.sign("Rail Workers Vote For Three-Day Strike Over Driverless Trains Plan!", "")
    suffix = signer.sign("Rail workers vote for 3-day strike over driverless trains plan", "")
    other = signer.sign("Fire guts reading room of Millbrook public library", "")
    assert similarity(ref, variant, SETTINGS) == 1.0
    assert similarity(ref, suffix, SETTINGS) is not None
    assert similarity(ref, other, SETTINGS) is None


# ---------------------------------------------------------------- DedupIndex


def build_index(signer: Signer, names: list[str], seen: int = 10 * DAY) -> DedupIndex:
    index = DedupIndex(SETTINGS, capacity=2)  # small: exercises _grow
    for i, name in enumerate(names, start=1):
        index.add(item_id=i, cluster_id=100 + i, seen=seen, sig=signer.sign(*article(name)))
    return index


NAMES = ["bridge", "rail_strike", "library_fire", "market_wrap_1", "match_1"]


def test_index_add_and_candidates(signer: Signer) -> None:
    index = build_index(signer, NAMES)
    assert len(index) == len(NAMES)
    title, body = article("rail_strike")
    copy = signer.sign("Westline strike set for Easter", body)
    rows = index.candidates(copy, seen=10 * DAY)
    assert 1 in rows  # row of rail_strike (rows start at 0)
    assert [int(index.item_ids[r]) for r, _ in index.matches(copy, 10 * DAY)] == [2]
    assert index.rows_of_item(2) == [1]


def test_index_finds_truncated_copy_through_the_lede_table(signer: Signer) -> None:
    index = build_index(signer, NAMES)
    _, body = article("library_fire")
    summary = signer.sign("Library fire", truncated(body, 40, ""))
    matches = index.matches(summary, 10 * DAY)
    assert [int(index.item_ids[r]) for r, _ in matches] == [3]


def test_unrelated_item_has_no_verified_match(signer: Signer) -> None:
    index = build_index(signer, NAMES)
    for name in ("library_fire_other", "market_wrap_2", "match_2"):
        assert index.matches(signer.sign(*article(name)), 10 * DAY) == []


def test_killed_rows_are_no_longer_candidates(signer: Signer) -> None:
    index = build_index(signer, NAMES)
    sig = signer.sign(*article("bridge"))
    assert index.candidates(sig, 10 * DAY) == [0]
    index.kill(index.rows_of_item(1))
    assert index.candidates(sig, 10 * DAY) == []
    assert index.rows_of_item(1) == []
    assert len(index) == len(NAMES) - 1
    # re-adding (a moved item) makes a new row
    row = index.add(1, 999, 10 * DAY, sig)
    assert row == len(NAMES) and index.candidates(sig, 10 * DAY) == [row]


def test_candidates_respect_the_window(signer: Signer) -> None:
    window = int(SETTINGS.window)
    sig = signer.sign(*article("bridge"))
    index = DedupIndex(SETTINGS)
    index.add(1, 1, seen=0, sig=sig)
    assert index.candidates(sig, seen=window) == [0]  # exactly the window: still in
    assert index.candidates(sig, seen=window + 1) == []  # one second older: out
    assert index.candidates(sig, seen=5) == [0]


def test_bulk_rows_are_queryable_after_finish_bulk(signer: Signer) -> None:
    sigs = [signer.sign(*article(n)) for n in NAMES]
    index = DedupIndex(SETTINGS)
    index.add_many(np.arange(1, 6), np.arange(1, 6), np.zeros(5, dtype=np.int64), sigs, bulk=True)
    assert index.candidates(sigs[0], 0) == []
    index.finish_bulk()
    assert index.candidates(sigs[0], 0) == [0]
    assert index.nbytes > 0


def test_online_band_keys_equal_bulk_band_keys() -> None:
    # online queries compute both tables' keys in one gather; start-up uses band_keys()
    index = DedupIndex(SETTINGS)
    rng = np.random.RandomState(3)
    for kind in (KIND_WORDS, KIND_CHARS):
        for _ in range(20):
            full = rng.randint(0, 2**32, size=SETTINGS.num_perm, dtype=np.uint64).astype(np.uint32)
            lede = rng.randint(0, 2**32, size=SETTINGS.lede_num_perm, dtype=np.uint64).astype(np.uint32)
            sig = Signature(kind, 100, full, 40, lede if kind == KIND_WORDS else None)
            full_keys, lede_keys, _ = index._keys(sig)
            assert np.array_equal(full_keys, index.full_bands.band_keys(full[None], kind)[0])
            if kind == KIND_WORDS:
                assert np.array_equal(lede_keys, index.lede_bands.band_keys(lede[None])[0])
            else:
                assert lede_keys is None


def test_tail_merge_keeps_everything_queryable(signer: Signer, monkeypatch) -> None:
    monkeypatch.setattr("aggregator.dedup.lsh.Buckets.MERGE_AT", 1)  # merge after every add
    index = build_index(signer, NAMES)
    assert len(index.buckets.keys) > 0  # merged into the sorted arrays
    for row, name in enumerate(NAMES):
        assert row in index.candidates(signer.sign(*article(name)), 10 * DAY)


def test_bucket_directory_finds_what_binary_search_finds() -> None:
    """The prefix directory gives the rows a plain binary search gives, for sparse keys,
    crowded prefixes (runs longer than the scan) and buckets past BUCKET_CAP."""
    from aggregator.dedup.lsh import BUCKET_CAP, Buckets

    rng = np.random.RandomState(5)
    buckets = Buckets()
    sparse = rng.randint(0, 2**32, size=(3000, 40), dtype=np.uint64).astype(np.uint32)
    crowded = (np.uint32(0xABC00000) + rng.randint(0, 64, size=(500, 40))).astype(np.uint32)
    hot = np.full((BUCKET_CAP + 30, 1), 0x12345678, dtype=np.uint32)  # one bucket, many rows
    keys = np.concatenate([sparse, crowded])
    buckets.add(keys, np.arange(len(keys)))
    buckets.add(hot, np.arange(len(keys), len(keys) + len(hot)))
    buckets.merge()
    assert (np.diff(buckets._starts) > buckets.SCAN).any()  # some runs take the fallback
    probes = [sparse[7], sparse[2999, :5], crowded[3], crowded[499, ::7], hot[0],
              rng.randint(0, 2**32, size=40, dtype=np.uint64).astype(np.uint32),
              np.concatenate([sparse[10, :3], crowded[20, :3], hot[0]])]  # fmt: skip
    for probe in probes:
        assert buckets.query(probe) == buckets._query_sorted(probe)
    assert 7 in buckets.query(sparse[7])
    newest = set(range(len(keys) + len(hot) - BUCKET_CAP, len(keys) + len(hot)))
    assert buckets.query(hot[0]) == newest  # the newest rows of a crowded bucket


@pytest.mark.parametrize("merged", [0, 40, 50, 60, 100, 109, 110])
def test_a_crowded_bucket_gives_its_newest_rows_wherever_the_last_merge_fell(merged: int) -> None:
    """BUCKET_CAP newest rows of a bucket, whether they sit in the sorted arrays, in the
    tail of rows added since the last merge, or in both (online clustering and a
    recluster merge at different points, and must see the same rows)."""
    from aggregator.dedup.lsh import BUCKET_CAP, Buckets

    key = np.array([0xC0FFEE], dtype=np.uint32)
    other = np.array([0x1234], dtype=np.uint32)
    buckets = Buckets()
    for row in range(110):  # rows 0..109 share `key`; the first `merged` are merged
        if row < merged:
            buckets.add(key[None], np.array([row]))
        else:
            if row == merged:
                buckets.merge()
            buckets.add_one(key if row % 7 else np.concatenate([key, other]), row)
    if merged == 110:
        buckets.merge()
    assert buckets.query(key) == set(range(110 - BUCKET_CAP, 110))


@pytest.mark.parametrize("merge_at", [8192, 7])
def test_batched_scans_answer_as_single_queries(merge_at: int, monkeypatch) -> None:
    """query() with a Scan from scan_many (made once for a batch, before its rows are
    added) gives what query() alone gives, query by query, as the batch's rows join the
    tail: sparse keys, crowded prefixes, a bucket past BUCKET_CAP that fills in the tail
    (the Scan is then set aside), and merges in the middle of the batch (merge_at 7)."""
    from aggregator.dedup.lsh import BUCKET_CAP, Buckets

    monkeypatch.setattr(Buckets, "MERGE_AT", merge_at)
    rng = np.random.RandomState(9)
    sparse = rng.randint(0, 2**32, size=(2000, 40), dtype=np.uint64).astype(np.uint32)
    crowded = (np.uint32(0xABC00000) + rng.randint(0, 64, size=(300, 40))).astype(np.uint32)
    hot = np.uint32(0x12345678)
    plain, batched = Buckets(), Buckets()
    for b in (plain, batched):
        b.add(np.concatenate([sparse, crowded]), np.arange(2300))
        b.add(np.full((6, 1), hot, dtype=np.uint32), np.arange(2300, 2306))  # a run short enough to scan
        b.merge()
        for row in range(3000, 3052):  # the hot bucket's tail fills up during the batch
            b.add_one(np.array([hot], dtype=np.uint32), row)
    # drawn from a few rows, so that later queries find rows the batch added before them
    batch = [sparse[rng.randint(20)] if i % 3 else crowded[rng.randint(10)] for i in range(60)]
    batch = [np.concatenate([q[:30], [hot]]).astype(np.uint32) if i % 4 == 0 else q for i, q in enumerate(batch)]
    batch.append(rng.randint(0, 2**32, size=40, dtype=np.uint64).astype(np.uint32))  # shares nothing
    scans = batched.scan_many(batch)
    used = 0
    for row, (keys, scan) in enumerate(zip(batch, scans, strict=True), start=5000):
        assert batched.query(keys, scan) == plain.query(keys)
        used += scan.merges == batched.merges
        plain.add_one(keys, row)
        batched.add_one(keys, row)
    if merge_at == 7:
        assert 0 < used < len(batch)  # scans made before a merge were set aside
    else:
        assert used == len(batch)
        assert len(batched._tail[int(hot)]) > BUCKET_CAP - Buckets.SCAN  # the tail crowded the hot bucket
    assert plain.query(np.array([hot], dtype=np.uint32)) == batched.query(np.array([hot], dtype=np.uint32))


# ---------------------------------------------------------------- choose_cluster


def test_choose_cluster_picks_the_most_similar() -> None:
    matches = [(0, 0.55), (1, 0.91), (2, 0.7)]
    assert choose_cluster(matches, {0: 5, 1: 9, 2: 3}) == (9, 0.91)


def test_choose_cluster_ties_go_to_the_older_cluster() -> None:
    clusters = {0: 9, 1: 4, 2: 7}
    assert choose_cluster([(0, 0.8), (1, 0.8), (2, 0.8)], clusters) == (4, 0.8)
    assert choose_cluster([(2, 0.8), (1, 0.8), (0, 0.8)], clusters) == (4, 0.8)


def test_choose_cluster_prefers_a_jaccard_match_over_a_containment_match() -> None:
    """A summary is contained in every longer version of its story; a whole-text match is
    stronger evidence, whatever the numbers."""
    clusters = {0: 3, 1: 8}
    assert choose_cluster([(0, -0.95), (1, 0.6)], clusters) == (8, 0.6)
    assert choose_cluster([(1, 0.6), (0, -0.95)], clusters) == (8, 0.6)
    # among containment matches the highest containment wins; the result is positive
    assert choose_cluster([(0, -0.75), (1, -0.9)], clusters) == (8, 0.9)
    assert choose_cluster([(0, -0.9), (1, -0.9)], clusters) == (3, 0.9)


def test_choose_cluster_without_matches_is_a_new_story() -> None:
    assert choose_cluster([], {}) is None


def test_cluster_views_compute_jaccard_from_stored_blobs(signer: Signer) -> None:
    """`clusters show` reads similarities from the stored signature bytes without numpy;
    they must be dedup.jaccard's."""
    from aggregator.store.queries import _similarity

    sigs = [signer.sign(*article(n)) for n in NAMES]
    sigs.append(signer.sign(article(NAMES[0])[0], article(NAMES[0])[1][:400]))  # a partial copy
    for a in sigs:
        for b in sigs:
            got = _similarity((a.kind, a.to_blobs()[0]), (b.kind, b.to_blobs()[0]), False)
            assert got == round(jaccard(a.full, b.full), 3)
    assert _similarity((0, b"\x01\x00\x00\x00"), (1, b"\x01\x00\x00\x00"), False) is None  # kinds differ


def test_long_texts_take_the_bounded_path_with_the_same_signature(signer: Signer, monkeypatch) -> None:
    """Texts over DIRECT_MAX_CHARS are hashed word list by word list (bounded memory for a
    5 MB entry); the signature must not depend on which path ran."""
    title, body = article(NAMES[0])
    direct = signer.sign(title, body)
    monkeypatch.setattr("aggregator.dedup.shingles.DIRECT_MAX_CHARS", 10)
    bounded = signer.sign(title, body)
    assert np.array_equal(direct.full, bounded.full) and np.array_equal(direct.lede, bounded.lede)
    assert (direct.size, direct.lede_size) == (bounded.size, bounded.lede_size)
