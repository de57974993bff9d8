-- Stories: SQLite's 015_stories.sql says why; the same columns and index.
ALTER TABLE clusters ADD COLUMN story_id BIGINT;
ALTER TABLE clusters ADD COLUMN story_score DOUBLE PRECISION;
ALTER TABLE clusters ADD COLUMN story_terms TEXT COLLATE "C";
ALTER TABLE clusters ADD COLUMN story_weights BYTEA;
UPDATE clusters SET story_id = id;
CREATE INDEX clusters_story ON clusters (story_id, id);  -- ends with id, as SQLite's end with the rowid
