-- The exact dedup shortcut (same canonical URL or content hash inside the window) is
-- answered by the in-memory dedup index (aggregator/dedup/, DedupIndex: the keys are
-- filed in its LSH buckets), so these two indexes only cost writes: every insert put a
-- random key into each, dirtying scattered pages that each commit rewrote (at 100k items
-- ~20 us of commit time and ~7 us of insert time per item, bench/dedup_speed.py).
DROP INDEX IF EXISTS items_canonical_url;
DROP INDEX IF EXISTS items_content_hash;
