-- Read-only views for other tools (the sqlite3 shell, Datasette, scripts): the story
-- clusters and their members without knowing how the tables fit together. Names and
-- columns are an interface: add columns at the end, never rename or drop them.
-- Times are ISO 8601 UTC text, like the tables.

-- One row per story: `size` and `sources` (distinct feeds) include members removed by
-- retention; `title` and `url` are the representative's (the earliest published member).
CREATE VIEW story_clusters AS
SELECT c.id         AS id,
       c.size       AS size,
       c.feed_count AS sources,
       r.title      AS title,
       r.url        AS url,
       c.first_seen AS first_seen,
       c.last_seen  AS last_seen
FROM clusters c
LEFT JOIN items r ON r.id = c.representative_id;

-- One row per stored item in a cluster; `feed` is the name from feeds.yaml, else the
-- feed's own title, else its URL; `is_representative` is 1 for the cluster's
-- representative, else 0.
CREATE VIEW cluster_members AS
SELECT i.cluster_id                          AS cluster_id,
       i.id                                  AS item_id,
       coalesce(f.name, f.title, f.url)      AS feed,
       i.title                               AS title,
       i.url                                 AS url,
       i.published_at                        AS published,
       (i.id = c.representative_id)          AS is_representative
FROM items i
JOIN feeds f ON f.id = i.feed_id
JOIN clusters c ON c.id = i.cluster_id;
