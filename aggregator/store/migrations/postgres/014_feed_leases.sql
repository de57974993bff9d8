-- Feed leases: SQLite's 014_feed_leases.sql says why; the same columns and indexes, with
-- this backend's text type (013_initial.sql: TEXT COLLATE "C").
ALTER TABLE feeds ADD COLUMN lease_owner TEXT COLLATE "C";
ALTER TABLE feeds ADD COLUMN lease_until TEXT COLLATE "C";
CREATE INDEX feeds_due ON feeds (next_fetch_at, id) WHERE active = 1 AND status != 'dead';
CREATE INDEX feeds_leased ON feeds (lease_owner) WHERE lease_owner IS NOT NULL;
