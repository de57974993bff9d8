-- What the dedup index needs to tell an item's own text from text many items share
-- (aggregator/evidence.py): the keys of its paragraphs, and whether any text of its own
-- is left (else its content hash is no exact key). NULL for items signed before: they
-- carry no paragraph keys, and their own body is "has any text".
ALTER TABLE signatures ADD COLUMN paragraphs BLOB;
ALTER TABLE signatures ADD COLUMN own_body INTEGER;
