-- The search index is filled in batches instead of row by row. FTS5 writes a new index
-- segment at every commit, so indexing inside each feed's transaction (~50 items) cost
-- ~200 us per item; indexing thousands of items per commit costs ~50 us. New and edited
-- items wait in `search_pending` until Store.index_search() runs: during a poll once
-- thousands are waiting, at the end of every poll run, and before every search (so a
-- search never misses an item that is stored).

CREATE TABLE search_pending (item_id INTEGER PRIMARY KEY);

DROP TRIGGER items_fts_insert;
CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN
    INSERT OR IGNORE INTO search_pending (item_id) VALUES (new.id);
END;

-- An external-content index must only be told to delete what it holds: an item still
-- waiting was never indexed, and is simply taken off the waiting list.
DROP TRIGGER items_fts_delete;
CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, title, text)
    SELECT 'delete', old.id, old.title, old.text
    WHERE NOT EXISTS (SELECT 1 FROM search_pending WHERE item_id = old.id);
    DELETE FROM search_pending WHERE item_id = old.id;
END;

DROP TRIGGER items_fts_update;
CREATE TRIGGER items_fts_update AFTER UPDATE OF title, text ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, title, text)
    SELECT 'delete', old.id, old.title, old.text
    WHERE NOT EXISTS (SELECT 1 FROM search_pending WHERE item_id = old.id);
    INSERT OR IGNORE INTO search_pending (item_id) VALUES (new.id);
END;
