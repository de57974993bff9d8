"""Near-duplicate detection: shingles -> MinHash signatures -> LSH candidates -> verify.

Pure and in-memory: no database here (aggregator.service.clustering connects the index to
the store, since placing an item is one transaction over both).

- `shingles`: words and n-grams of a text, hashed;
- `signature`: MinHash signatures (Signer, Signature);
- `lsh`: banding and the bucket store that proposes candidates;
- `index`: DedupIndex, the in-memory index of every entry in the window;
- `similarity`: verifying a candidate and choosing the cluster an entry joins;
- `evidence`: what besides similar text makes two entries one story.

Choices, each measured with bench/dedup_quality.py and bench/dedup_speed.py:
- Shingles are word 3-grams of the lower-cased words of title + body. Character n-grams
  score reworded headlines and template pieces (market wraps, scores) as more alike,
  because most characters of a changed number or name survive; word 3-grams break on
  every changed fact, which is what separates "same story" from "same template".
- Items with fewer than `short_words` words (title-only feeds, one-line summaries) have
  too few word 3-grams for MinHash; they use character 5-grams instead, are compared only
  with other short items, and need a higher threshold.
- Truncated copies (a 40-word summary of a 600-word article) have a low Jaccard with the
  article; they are found through a second signature of the *lede* (the first
  `lede_words` words of the body, which copies keep) and accepted when the containment of
  the shorter text in the longer one is high.
- Signing is vectorised with numpy over datasketch's own "affine32" permutations (the
  same values `MinHash.update_batch` gives, checked in tests), so one call signs a
  document instead of one Python call per shingle.
- The LSH index keeps band keys in sorted numpy arrays (~8 bytes per band per item)
  instead of MinHashLSH's dict-of-sets (~8-10 KB per item), which is what lets 200k
  indexed items fit in well under a gigabyte.
"""
