-- Datasette (`?_search=`, the search box) and sqlite-utils (`sqlite-utils search`, `.search()`)
-- find a table's full-text index by the text of its CREATE VIRTUAL TABLE: a table whose
-- definition says content="items" (or content=[items]) literally, as sqlite-utils'
-- enable_fts writes it. 003 wrote content = 'items', which neither tool recognises.
--
-- The definition is rewritten in place rather than the index rebuilt: only the quoting
-- changes, so FTS5 parses the same columns, content table, rowid column and tokenizer, and
-- the index (its shadow tables items_fts_data/_idx/_docsize/_config) stays as it is; no
-- item is re-tokenised, whatever the size of the database. Indexing stays batched
-- (005: search_pending); the tools see an item once the poll run that stored it ends.
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
-- search` (aggregator/search.py: TITLE_WEIGHT, TEXT_WEIGHT), a word in the headline
-- counting double.
INSERT INTO items_fts (items_fts, rank) VALUES ('rank', 'bm25(2.0, 1.0)');
