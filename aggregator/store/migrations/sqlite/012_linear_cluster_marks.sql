-- The duplication marks of migration 006 (items.duplicate, items.republished, and so
-- feed_counts) at a cost per write that does not grow with the cluster. 006 re-marked every
-- member of a cluster whenever one member joined, left or moved, so a story carried n
-- times cost n^2/2 member visits: 20,000 identical entries took 3 min 51 s in one write
-- transaction, and their recluster 270 s. The marks mean what 006 says; only the number
-- of members a write looks at changes. With the marks right before a row's change:
--
-- duplicate    can change for the row itself, and for one more member only when the
--              cluster's first member (by first_seen_at, then id) changes: if the row now
--              comes first, the member that came first before comes second; if the row
--              came first before (its mark said 0), whoever comes first now. A change of
--              `pruned` can change the first member's mark only (every other member is a
--              duplicate either way).
-- republished  can change for the row itself, unless the row is its cluster's
--              representative and its feed changes as the members see it (it is stored,
--              deleted, or moved to another feed), or the representative becomes another
--              feed's item: then any member's mark may change, and 006's `cluster_marks`
--              re-marks the cluster whole (at most once per cluster and write transaction
--              of the aggregator: a feed's poll, a recluster's batch of 2,000 items).
--
-- `item_marks` and `cluster_place_marks` are write-only views like 006's `cluster_marks`:
-- inserting an item id marks that item from scratch; inserting (cluster id, place) marks
-- the member at that place in first-seen order (0: the first). Members are found in that
-- order through an index on (cluster_id, first_seen_at), which replaces the one on
-- cluster_id alone (every lookup by cluster uses it as before): a few steps, whatever the
-- cluster's size (bench/cluster_writes.py, tests/robustness/test_attack_cluster_writes.py).
-- On typical stories (bench/dedup_speed.py's 10,000 items, 1-5 copies each) a poll runs 1%
-- more SQLite steps per item than under 006, a recluster 6% more.
-- Assumed, as in 006: a cluster's representative is one of its members; and the marks are
-- right before each write, as every write through these triggers leaves them. Hand-run
-- SQL that sets the marks themselves can leave them wrong; `aggregator recluster` rebuilds
-- them from zero. Nothing is backfilled: the marks 006 kept are the ones kept from here on.

DROP INDEX items_cluster;
CREATE INDEX items_cluster_seen ON items (cluster_id, first_seen_at);

CREATE VIEW item_marks AS SELECT NULL AS item_id WHERE 0;

-- One item from scratch (0 and 0 when unclustered or its cluster does not exist), written
-- only if it changes.
CREATE TRIGGER item_marks_apply INSTEAD OF INSERT ON item_marks BEGIN
    UPDATE items SET duplicate = m.duplicate, republished = m.republished
    FROM (SELECT coalesce(c.pruned > 0
                          OR i.id != (SELECT j.id FROM items j WHERE j.cluster_id = c.id
                                      ORDER BY j.first_seen_at, j.id LIMIT 1), 0) AS duplicate,
                 coalesce(i.feed_id != r.feed_id, 0) AS republished
          FROM items i
          LEFT JOIN clusters c ON c.id = i.cluster_id
          LEFT JOIN items r ON r.id = c.representative_id
          WHERE i.id = new.item_id) AS m
    WHERE items.id = new.item_id
      AND (items.duplicate != m.duplicate OR items.republished != m.republished);
END;

CREATE VIEW cluster_place_marks AS SELECT NULL AS cluster_id, NULL AS place WHERE 0;

CREATE TRIGGER cluster_place_marks_apply INSTEAD OF INSERT ON cluster_place_marks BEGIN
    INSERT INTO item_marks (item_id)
    SELECT id FROM items WHERE cluster_id = new.cluster_id
    ORDER BY first_seen_at, id LIMIT 1 OFFSET new.place;
END;

-- The representative's feed, as the members see it through clusters.representative_id:
-- inserting, deleting or moving that item to another feed re-marks its cluster whole.
DROP TRIGGER items_counts_insert;
CREATE TRIGGER items_counts_insert AFTER INSERT ON items BEGIN
    INSERT INTO feed_counts (feed_id, items, duplicates, republished)
    VALUES (new.feed_id, 1, new.duplicate, new.republished)
    ON CONFLICT (feed_id) DO UPDATE SET items = items + excluded.items,
        duplicates = duplicates + excluded.duplicates, republished = republished + excluded.republished;
    INSERT INTO item_marks (item_id) SELECT new.id WHERE new.cluster_id IS NOT NULL;
    -- it comes first: the member that came first before is second now
    INSERT INTO cluster_place_marks (cluster_id, place)
    SELECT new.cluster_id, 1 WHERE new.id = (SELECT id FROM items WHERE cluster_id = new.cluster_id
                                             ORDER BY first_seen_at, id LIMIT 1);
    INSERT INTO cluster_marks (cluster_id)
    SELECT id FROM clusters WHERE id = new.cluster_id AND representative_id = new.id;
END;

DROP TRIGGER items_counts_delete;
CREATE TRIGGER items_counts_delete AFTER DELETE ON items BEGIN
    INSERT INTO feed_counts (feed_id, items, duplicates, republished)
    VALUES (old.feed_id, -1, -old.duplicate, -old.republished)
    ON CONFLICT (feed_id) DO UPDATE SET items = items + excluded.items,
        duplicates = duplicates + excluded.duplicates, republished = republished + excluded.republished;
    -- it came first: whoever comes first now
    INSERT INTO cluster_place_marks (cluster_id, place)
    SELECT old.cluster_id, 0 WHERE old.cluster_id IS NOT NULL AND old.duplicate = 0;
    INSERT INTO cluster_marks (cluster_id)
    SELECT id FROM clusters WHERE id = old.cluster_id AND representative_id = old.id;
END;

DROP TRIGGER items_marks_update;
CREATE TRIGGER items_marks_update AFTER UPDATE OF cluster_id, first_seen_at, feed_id ON items
WHEN old.cluster_id IS NOT new.cluster_id OR old.first_seen_at IS NOT new.first_seen_at
     OR old.feed_id IS NOT new.feed_id
BEGIN
    INSERT INTO item_marks (item_id) VALUES (new.id);
    -- it came first in the cluster it was in: whoever comes first there now (nobody to mark
    -- when that cluster is gone, as for every item a recluster unclusters)
    INSERT INTO cluster_place_marks (cluster_id, place)
    SELECT old.cluster_id, 0 WHERE old.cluster_id IS NOT NULL AND old.duplicate = 0
                             AND EXISTS (SELECT 1 FROM clusters WHERE id = old.cluster_id);
    -- it comes first in its cluster now: the member that came first before is second
    INSERT INTO cluster_place_marks (cluster_id, place)
    SELECT new.cluster_id, 1 WHERE new.id = (SELECT id FROM items WHERE cluster_id = new.cluster_id
                                             ORDER BY first_seen_at, id LIMIT 1);
    INSERT INTO cluster_marks (cluster_id)
    SELECT id FROM clusters
    WHERE id IN (old.cluster_id, new.cluster_id) AND representative_id = new.id
      AND old.feed_id IS NOT new.feed_id;
END;

DROP TRIGGER clusters_marks_update;
CREATE TRIGGER clusters_marks_update AFTER UPDATE OF representative_id, pruned ON clusters
WHEN old.representative_id IS NOT new.representative_id OR old.pruned IS NOT new.pruned
BEGIN
    INSERT INTO cluster_place_marks (cluster_id, place) SELECT new.id, 0 WHERE old.pruned IS NOT new.pruned;
    -- the representative's feed: every member's reference for `republished`
    INSERT INTO cluster_marks (cluster_id)
    SELECT new.id WHERE (SELECT feed_id FROM items WHERE id = old.representative_id)
                        IS NOT (SELECT feed_id FROM items WHERE id = new.representative_id);
END;
