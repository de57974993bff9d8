"""Storage: feeds, items, clusters, signatures, fetch log, and the queries readers run, on
SQLite (the default, a file) or PostgreSQL (several workers on one database).

- `database`: the Store (open, migrate, transactions, feeds and items), for both backends;
- `postgres`: psycopg 3 behind the sqlite3 calls the Store makes; `dialect`: the few SQL
  fragments that differ between the two;
- `leases`: how workers on PostgreSQL claim due feeds and elect the one that publishes;
- `clusters`: what the clusterer reads and writes, and the counters that keep every
  process's dedup index in step;
- `upkeep`: pruning, index merges, health counts;
- `queries`, `search` (`search_postgres` for tsvector), `stats`, `ranking`: what the CLI,
  the digest and the web page read;
- `migrations/sqlite/NNN_*.sql`, `migrations/postgres/NNN_*.sql`: the schema, applied in
  order on open (a number means the same schema on both).
"""
