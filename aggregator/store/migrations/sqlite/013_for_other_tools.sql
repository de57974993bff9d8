-- Datasette (`?_search=`, the search box) and sqlite-utils (`sqlite-utils search`, `.search()`)
-- find a table's full-text index by the text of its CREATE VIRTUAL TABLE: a table whose
-- definition says content="items" (or content=[items]) literally, as sqlite-utils'
-- enable_fts writes it. 003 wrote content = 'items', which neither tool recognises.
--
-- The definition is rewritten in place rather than the index rebuilt: only the quoting
-- changes, so FTS5 parses the same columns, content table, rowid column and tokenizer, and
-- the index (its shadow tables items_fts_data/_idx/_docsize/_config) stays as it is; no
-- item is re-tokenised, whatever the size of the database (at 100k items: 0.01 s, where
-- a 'rebuild' took 15.8 s). SQLite refuses writable_schema only on a connection opened in
-- its defensive mode (SQLITE_DBCONFIG_DEFENSIVE), which Python's sqlite3 does not turn on.
-- Indexing stays batched (005: search_pending); the tools see an item once the poll run
-- that stored it ends.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = 'CREATE VIRTUAL TABLE "items_fts" USING FTS5 (
    "title", "text",
    tokenize=''unicode61 remove_diacritics 2'',
    content="items",
    content_rowid="id"
)'
WHERE type = 'table' AND name = 'items_fts';
PRAGMA writable_schema = OFF;

-- What the tools order results by (FTS5's `rank` column): the same weights as `aggregator
-- search` (aggregator/store/search.py: TITLE_WEIGHT, TEXT_WEIGHT), a word in the headline
-- counting double.
INSERT INTO items_fts (items_fts, rank) VALUES ('rank', 'bm25(2.0, 1.0)');

-- Datasette labels a link to a feed (items.feed_id, fetch_log.feed_id) with the feed's
-- `name`, its first column called name or title; that was NULL (shown as "None") for every
-- feed without a name in feeds.yaml. From here on:
--   feeds.configured_name  the name given in feeds.yaml; NULL: none given
--   feeds.name             the name aggregator shows: configured_name, else the feed's own
--                          title, else its URL; never NULL
-- Triggers keep `name` so for every writer (a hand-run INSERT giving a name treats it as
-- the configured one). Set a name in feeds.yaml rather than in `name`: a change of the
-- configured name, title or URL recomputes it.
ALTER TABLE feeds ADD COLUMN configured_name TEXT;
UPDATE feeds SET configured_name = name;
UPDATE feeds SET name = coalesce(configured_name, title, url);

CREATE TRIGGER feeds_name_insert AFTER INSERT ON feeds BEGIN
    UPDATE feeds SET configured_name = coalesce(new.configured_name, new.name),
                     name = coalesce(new.configured_name, new.name, new.title, new.url)
    WHERE id = new.id;
END;

CREATE TRIGGER feeds_name_update AFTER UPDATE OF configured_name, title, url ON feeds
WHEN new.name IS NOT coalesce(new.configured_name, new.title, new.url)
BEGIN
    UPDATE feeds SET name = coalesce(new.configured_name, new.title, new.url) WHERE id = new.id;
END;
