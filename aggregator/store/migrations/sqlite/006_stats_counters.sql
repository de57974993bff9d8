-- Duplication facts kept up to date, so `aggregator stats` reads a few thousand counter
-- rows instead of ranking and joining every stored item (10.9 s -> a few ms at 1M items).
--
-- items.duplicate   1: the item joined an existing cluster (it is not its cluster's
--                   first-seen member, by first_seen_at then id), or its cluster lost
--                   members to retention (pruning goes by first-seen time, so every
--                   member left joined an existing story); 0 otherwise and when unclustered.
-- items.republished 1: the item's cluster's representative (clusters.representative_id)
--                   is another feed's item; 0 otherwise and when unclustered.
-- feed_counts       per feed: stored items, and how many of them are duplicate and
--                   republished (feeds without items have no row).
--
-- Triggers keep all three exact for every writer (the daemon, `recluster`, prune, a
-- hand-run UPDATE in the sqlite3 shell): a change of an item's cluster, first-seen time or
-- feed, an insert or delete, and a change of a cluster's representative or pruned count
-- re-marks the members of the clusters involved (a new cluster has none: items point at
-- existing clusters only). `cluster_marks` is a write-only view that names that step
-- once: inserting a cluster id into it re-marks that cluster.
-- Assumed, as every aggregator write keeps it: a cluster's representative is one of its
-- members. Hand-run SQL that moves a representative out of its cluster (or reuses a
-- deleted cluster's id with foreign keys off) can leave marks stale until that cluster
-- is next touched; `aggregator recluster` rebuilds them all.
-- Cost, measured at 1M items: ~5 us per inserted item and ~20 us per clustered item on
-- the write path; the backfill below takes ~30 s when a 1M-item database is migrated.

ALTER TABLE items ADD COLUMN duplicate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN republished INTEGER NOT NULL DEFAULT 0;

-- `stats` counts duplicates first seen today and in the last 7 days from this index.
CREATE INDEX items_duplicate_seen ON items (first_seen_at) WHERE duplicate = 1;

CREATE TABLE feed_counts (
    feed_id     INTEGER PRIMARY KEY,
    items       INTEGER NOT NULL DEFAULT 0,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    republished INTEGER NOT NULL DEFAULT 0
);

CREATE VIEW cluster_marks AS SELECT NULL AS cluster_id WHERE 0;

-- Mark every member of cluster new.cluster_id from scratch (if it exists), writing only
-- rows that change. The subqueries are uncorrelated: each runs once per call.
CREATE TRIGGER cluster_marks_apply INSTEAD OF INSERT ON cluster_marks BEGIN
    UPDATE items
    SET duplicate = ((SELECT pruned FROM clusters WHERE id = new.cluster_id) > 0
                     OR id != (SELECT j.id FROM items j WHERE j.cluster_id = new.cluster_id
                               ORDER BY j.first_seen_at, j.id LIMIT 1)),
        republished = coalesce(feed_id != (SELECT r.feed_id FROM clusters c
                                           JOIN items r ON r.id = c.representative_id
                                           WHERE c.id = new.cluster_id), 0)
    WHERE cluster_id = new.cluster_id
      AND EXISTS (SELECT 1 FROM clusters WHERE id = new.cluster_id)
      AND (duplicate IS NOT ((SELECT pruned FROM clusters WHERE id = new.cluster_id) > 0
                             OR id != (SELECT j.id FROM items j WHERE j.cluster_id = new.cluster_id
                                       ORDER BY j.first_seen_at, j.id LIMIT 1))
           OR republished IS NOT coalesce(feed_id != (SELECT r.feed_id FROM clusters c
                                                      JOIN items r ON r.id = c.representative_id
                                                      WHERE c.id = new.cluster_id), 0));
END;

-- Feed counters move by deltas (upserts), so they add up whatever order triggers fire in.
CREATE TRIGGER items_counts_insert AFTER INSERT ON items BEGIN
    INSERT INTO feed_counts (feed_id, items, duplicates, republished)
    VALUES (new.feed_id, 1, new.duplicate, new.republished)
    ON CONFLICT (feed_id) DO UPDATE SET items = items + excluded.items,
        duplicates = duplicates + excluded.duplicates, republished = republished + excluded.republished;
    INSERT INTO cluster_marks (cluster_id) SELECT new.cluster_id WHERE new.cluster_id IS NOT NULL;
END;

CREATE TRIGGER items_counts_delete AFTER DELETE ON items BEGIN
    INSERT INTO feed_counts (feed_id, items, duplicates, republished)
    VALUES (old.feed_id, -1, -old.duplicate, -old.republished)
    ON CONFLICT (feed_id) DO UPDATE SET items = items + excluded.items,
        duplicates = duplicates + excluded.duplicates, republished = republished + excluded.republished;
    INSERT INTO cluster_marks (cluster_id) SELECT old.cluster_id WHERE old.cluster_id IS NOT NULL;
END;

CREATE TRIGGER items_counts_update AFTER UPDATE OF feed_id, duplicate, republished ON items
WHEN old.feed_id IS NOT new.feed_id OR old.duplicate != new.duplicate
     OR old.republished != new.republished
BEGIN
    INSERT INTO feed_counts (feed_id, items, duplicates, republished)
    VALUES (old.feed_id, -1, -old.duplicate, -old.republished)
    ON CONFLICT (feed_id) DO UPDATE SET items = items + excluded.items,
        duplicates = duplicates + excluded.duplicates, republished = republished + excluded.republished;
    INSERT INTO feed_counts (feed_id, items, duplicates, republished)
    VALUES (new.feed_id, 1, new.duplicate, new.republished)
    ON CONFLICT (feed_id) DO UPDATE SET items = items + excluded.items,
        duplicates = duplicates + excluded.duplicates, republished = republished + excluded.republished;
END;

CREATE TRIGGER items_marks_update AFTER UPDATE OF cluster_id, first_seen_at, feed_id ON items
WHEN old.cluster_id IS NOT new.cluster_id OR old.first_seen_at IS NOT new.first_seen_at
     OR old.feed_id IS NOT new.feed_id
BEGIN
    INSERT INTO cluster_marks (cluster_id)
    SELECT old.cluster_id WHERE old.cluster_id IS NOT new.cluster_id AND old.cluster_id IS NOT NULL;
    INSERT INTO cluster_marks (cluster_id) SELECT new.cluster_id WHERE new.cluster_id IS NOT NULL;
    -- unclustered now (or in a cluster that does not exist): nothing to count
    UPDATE items SET duplicate = 0, republished = 0
    WHERE id = new.id AND (duplicate OR republished)
      AND NOT EXISTS (SELECT 1 FROM clusters WHERE id = new.cluster_id);
END;

CREATE TRIGGER clusters_marks_update AFTER UPDATE OF representative_id, pruned ON clusters
WHEN old.representative_id IS NOT new.representative_id OR old.pruned IS NOT new.pruned
BEGIN
    INSERT INTO cluster_marks (cluster_id) VALUES (new.id);
END;

CREATE TRIGGER clusters_marks_delete AFTER DELETE ON clusters BEGIN
    UPDATE items SET duplicate = 0, republished = 0
    WHERE cluster_id = old.id AND (duplicate OR republished);
END;

-- Backfill (bench/scale.py runs the statements from here on after its bulk load, which
-- bypasses the triggers): mark every item, then count per feed.
UPDATE items SET duplicate = m.duplicate, republished = m.republished
FROM (SELECT i.id AS id,
             (c.pruned > 0 OR row_number() OVER (PARTITION BY i.cluster_id
                                                 ORDER BY i.first_seen_at, i.id) > 1) AS duplicate,
             coalesce(i.feed_id != r.feed_id, 0) AS republished
      FROM items i
      JOIN clusters c ON c.id = i.cluster_id
      LEFT JOIN items r ON r.id = c.representative_id) AS m
WHERE items.id = m.id AND (items.duplicate != m.duplicate OR items.republished != m.republished);

UPDATE items SET duplicate = 0, republished = 0
WHERE (duplicate OR republished) AND NOT EXISTS (SELECT 1 FROM clusters c WHERE c.id = items.cluster_id);

DELETE FROM feed_counts;

INSERT INTO feed_counts (feed_id, items, duplicates, republished)
SELECT feed_id, count(*), sum(duplicate), sum(republished) FROM items GROUP BY feed_id;
