-- What the dedup index needs to tell an item's own text from text many items share
-- (aggregator/dedup/evidence.py): the keys of its paragraphs, and which of its exact keys count
-- (1: its content hash, when any text of its own is left; 2: its link, unless other
-- entries of its feed share it). NULL for items signed before: no paragraph keys; the
-- content hash counts when the item has any text, the link always.
ALTER TABLE signatures ADD COLUMN paragraphs BLOB;
ALTER TABLE signatures ADD COLUMN exact_keys INTEGER;
