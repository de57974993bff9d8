-- Every transaction that places items in clusters adds 1 to `index_writes`, so a process
-- that keeps its dedup index in memory can tell when another process wrote clusters
-- (aggregator/store/migrations/sqlite/010 says how the processes use it).
INSERT INTO meta (key, value) VALUES ('index_writes', '0');
