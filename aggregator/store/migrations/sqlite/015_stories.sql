-- Stories: the tier above the copy clusters (aggregator/dedup/stories.py says how clusters
-- are placed). Copy clusters that report one event, each in its own words, share a story.
--   clusters.story_id     the story the cluster is in: the id of the story's first cluster
--                         (so a cluster alone is the story with its own id). Stable: it
--                         stays the story's id when the lead cluster changes.
--   clusters.story_score  how strongly the cluster matched the story when it joined (the
--                         weighted term cosine); NULL for the cluster that started it.
--   clusters.story_terms  the cluster's terms as placed, one per line ("*" marks a name),
--   clusters.story_weights and their weights (float32, little-endian), so that a restarted
--                         daemon's story index is the one that placed them.
ALTER TABLE clusters ADD COLUMN story_id INTEGER;
ALTER TABLE clusters ADD COLUMN story_score REAL;
ALTER TABLE clusters ADD COLUMN story_terms TEXT;
ALTER TABLE clusters ADD COLUMN story_weights BLOB;
-- Every existing cluster is a story of its own until `aggregator recluster` groups them.
UPDATE clusters SET story_id = id;
-- A story's clusters, for the story views and the digest.
CREATE INDEX clusters_story ON clusters (story_id);
