"""Ingest: how a feed's bytes arrive (fetch, with its transport and address checks), what
they say (parse), and the clean records the rest of the pipeline works on (normalize).
OPML import/export and feed autodiscovery live here too: they read the same sources."""
