-- Pruning keeps a cluster's counts: `size` and `feed_count` count every member the story
-- ever had; `pruned` says how many of them were deleted by retention (size - pruned
-- members remain). `meta` holds small facts shared by the daemon and the CLI, such as
-- the clustering generation that `recluster` bumps so a running daemon reloads its index.

ALTER TABLE clusters ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('cluster_generation', '0');
