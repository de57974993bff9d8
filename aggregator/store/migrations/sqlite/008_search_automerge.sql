-- FTS5 merges index segments as they pile up: by default as soon as 4 share a level,
-- so a growing index is rewritten again and again while it is filled. With 16, and
-- Store.index_search adding 20,000 items per transaction, filling the index of 100k
-- items took 49 instead of 72 us per item (bench/dedup_speed.py); queries on that
-- index took the same time. The hourly maintenance (store.maintain) merges the index
-- further in small steps ('merge' with FTS5's usermerge of 4), off the write path.
INSERT INTO items_fts (items_fts, rank) VALUES ('automerge', 16);
