-- Several processes may write clusters to one database (`aggregator fetch` beside the
-- daemon), and each keeps its dedup index in memory. They stay in step through:
--   meta.index_writes  +1 for every transaction that places items in clusters (009);
--   items.placed_seq   the index_writes value of the transaction that last placed the
--                      item (NULL for items placed before this migration);
--   meta.cluster_generation (002)  +1 for every recluster and every prune.
-- A process whose index saw writes up to N indexes (again) the items with placed_seq > N
-- before it places anything, so it never joins a story through a stale or missing row;
-- a generation change (cluster ids renumbered, items deleted) makes it rebuild the index.
ALTER TABLE items ADD COLUMN placed_seq INTEGER;
CREATE INDEX items_placed_seq ON items (placed_seq) WHERE placed_seq IS NOT NULL;
