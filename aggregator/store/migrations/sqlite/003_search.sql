-- Full-text search over items' title and text (`aggregator search`, `clusters list --query`).
-- An external-content FTS5 table: the text is stored once, in `items`; the index follows
-- it through the triggers below, so every writer (the daemon, the CLI, prune, a hand-run
-- UPDATE in the sqlite3 shell) keeps it in sync. `remove_diacritics 2` lets "cafe" find
-- "café".

CREATE VIRTUAL TABLE items_fts USING fts5(
    title, text,
    content = 'items', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN
    INSERT INTO items_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
END;

CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, title, text)
    VALUES ('delete', old.id, old.title, old.text);
END;

-- Only a change of the indexed columns re-indexes; cluster moves do not touch the index.
CREATE TRIGGER items_fts_update AFTER UPDATE OF title, text ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, title, text)
    VALUES ('delete', old.id, old.title, old.text);
    INSERT INTO items_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
END;

-- Index the items stored before this migration.
INSERT INTO items_fts (items_fts) VALUES ('rebuild');
