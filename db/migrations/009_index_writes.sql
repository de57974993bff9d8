-- Every transaction that places items in clusters (or prunes them) adds 1 to
-- `index_writes`. A process keeps its dedup index in memory; when the counter moved
-- without it (`aggregator fetch` beside the daemon stored, edited or moved items), it
-- reloads the index before placing anything, so it never joins a story through a row
-- that is stale or a cluster that no longer exists.
INSERT INTO meta (key, value) VALUES ('index_writes', '0');
