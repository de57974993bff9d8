-- Feeds, items, story clusters, MinHash signatures and the fetch log.
-- Times are ISO 8601 UTC text ("2026-11-25T13:00:00Z"): readable in any SQLite tool and
-- ordered correctly as strings.

CREATE TABLE feeds (
    id              INTEGER PRIMARY KEY,
    url             TEXT NOT NULL UNIQUE,
    name            TEXT,               -- from feeds.yaml; NULL: use the feed's own title
    title           TEXT,               -- the feed's own title
    site_url        TEXT,
    tags            TEXT NOT NULL DEFAULT '[]',   -- JSON list
    interval_s      REAL,               -- per-feed override; NULL: settings.interval
    active          INTEGER NOT NULL DEFAULT 1,   -- 0 once removed from feeds.yaml
    status          TEXT NOT NULL DEFAULT 'new',  -- new | ok | error | dead
    format          TEXT,
    etag            TEXT,
    last_modified   TEXT,
    last_fetch_at   TEXT,
    last_success_at TEXT,
    last_http_status INTEGER,
    last_error      TEXT,
    warning         TEXT,               -- e.g. malformed feed whose entries were recovered
    error_count     INTEGER NOT NULL DEFAULT 0,   -- consecutive failures, for backoff
    next_fetch_at   TEXT,
    moved_to        TEXT,               -- permanent redirect target, reported not applied
    ttl_s           REAL,               -- RSS <ttl>
    max_age_s       REAL,               -- Cache-Control max-age
    created_at      TEXT NOT NULL
);

CREATE TABLE clusters (
    id                INTEGER PRIMARY KEY,
    representative_id INTEGER,          -- earliest member (who reported first)
    size              INTEGER NOT NULL DEFAULT 0,
    feed_count        INTEGER NOT NULL DEFAULT 0,
    first_seen        TEXT,             -- earliest member's published time
    last_seen         TEXT,             -- latest member's published time
    updated_at        TEXT,             -- last time a member joined or changed
    created_at        TEXT NOT NULL
);
CREATE INDEX clusters_last_seen ON clusters (last_seen);
CREATE INDEX clusters_updated_at ON clusters (updated_at);

CREATE TABLE items (
    id            INTEGER PRIMARY KEY,
    feed_id       INTEGER NOT NULL REFERENCES feeds (id),
    key           TEXT NOT NULL,        -- guid, else canonical link, else content hash
    url           TEXT,                 -- link as published
    canonical_url TEXT,
    title         TEXT NOT NULL,
    text          TEXT NOT NULL,
    author        TEXT,
    published_at  TEXT NOT NULL,
    updated_at    TEXT,
    first_seen_at TEXT NOT NULL,
    changed_at    TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    cluster_id    INTEGER REFERENCES clusters (id),
    similarity    REAL,                 -- to the cluster's representative, 1.0 for it
    UNIQUE (feed_id, key)
);
CREATE INDEX items_canonical_url ON items (canonical_url);
CREATE INDEX items_content_hash ON items (content_hash);
CREATE INDEX items_cluster ON items (cluster_id);
CREATE INDEX items_first_seen ON items (first_seen_at);

-- MinHash signatures, kept so the LSH index is rebuilt at start-up without re-shingling.
CREATE TABLE signatures (
    item_id  INTEGER PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
    kind     INTEGER NOT NULL,          -- 0: word shingles, 1: char shingles (short items)
    size     INTEGER NOT NULL,          -- shingles in the full text
    lede_size INTEGER NOT NULL,         -- shingles in the lede
    full     BLOB NOT NULL,             -- uint32 little-endian hash values
    lede     BLOB                       -- idem for the lede; NULL for short items
);

CREATE TABLE fetch_log (
    id          INTEGER PRIMARY KEY,
    feed_id     INTEGER NOT NULL REFERENCES feeds (id),
    fetched_at  TEXT NOT NULL,
    outcome     TEXT NOT NULL,          -- ok | not_modified | error | retry_later | gone
    http_status INTEGER,
    duration_ms INTEGER,
    new_items   INTEGER NOT NULL DEFAULT 0,
    updated_items INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX fetch_log_feed ON fetch_log (feed_id, fetched_at);
