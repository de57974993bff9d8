-- Feed leases, for several workers on one PostgreSQL database (aggregator/store/leases.py
-- says how they are used). A worker claims due feeds by writing its id and the time its
-- claim ends; the others skip a feed while the claim runs; writing the feed's result clears
-- it. An SQLite file has one daemon (the lock file beside it), which never claims: the
-- columns are here so that both backends keep one schema.
--   feeds.lease_owner  the worker holding the feed: host:pid:random; NULL: nobody
--   feeds.lease_until  when that claim ends (ISO 8601 UTC, like every time here)
ALTER TABLE feeds ADD COLUMN lease_owner TEXT;
ALTER TABLE feeds ADD COLUMN lease_until TEXT;
-- The feeds due first, for the claims (and SQLite's due_feeds): at 100,000 feeds a scan of
-- the table at every tick of every worker is what this saves.
CREATE INDEX feeds_due ON feeds (next_fetch_at, id) WHERE active = 1 AND status != 'dead';
-- A worker's own leases, renewed and released by owner.
CREATE INDEX feeds_leased ON feeds (lease_owner) WHERE lease_owner IS NOT NULL;
