"""Storage: feeds, items, clusters, signatures, fetch log, and the queries readers run.

- `database`: the Store (open, migrate, transactions, feeds and items);
- `clusters`: what the clusterer reads and writes, and the counters that keep every
  process's dedup index in step;
- `upkeep`: pruning, index merges, health counts;
- `queries`, `search`, `stats`, `ranking`: what the CLI, the digest and the web page read;
- `migrations/sqlite/NNN_*.sql`: the schema, applied in order on open.
"""
