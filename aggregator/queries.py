"""Read side: what the CLI (and later the digest) shows. Plain records out, no printing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from .config import DedupSettings
from .dedup import Signature, jaccard
from .store import Store
from .timeutil import from_iso


@dataclass(frozen=True)
class MemberView:
    id: int
    feed: str
    title: str
    url: str | None
    published: datetime
    similarity: float | None  # estimated resemblance to the representative


@dataclass(frozen=True)
class ClusterView:
    id: int
    size: int
    feeds: int
    title: str
    url: str | None
    first_seen: datetime
    last_seen: datetime
    items: tuple[MemberView, ...]
    updated: datetime | None = None  # last time a member joined or changed

    @property
    def sources(self) -> int:
        """Distinct outlets that carried the story."""
        return len({m.feed for m in self.items}) or self.feeds

    def to_json(self) -> dict:
        """The documented, stable JSON shape (times ISO 8601 UTC)."""
        d = asdict(self)
        del d["updated"]
        for key in ("first_seen", "last_seen"):
            d[key] = _iso(d[key])
        for item in d["items"]:
            item["published"] = _iso(item["published"])
        return d


def _iso(dt: datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


_FEED_NAME = "coalesce(f.name, f.title, f.url)"


def list_clusters(
    store: Store, since: datetime | None = None, min_size: int = 1, limit: int | None = 50
) -> list[ClusterView]:
    """Clusters active since `since`, newest first, with their members."""
    sql = """SELECT c.id FROM clusters c WHERE c.size >= ?"""
    args: list = [min_size]
    if since is not None:
        sql += " AND c.last_seen >= ?"
        args.append(since.strftime("%Y-%m-%dT%H:%M:%SZ"))
    sql += " ORDER BY c.last_seen DESC, c.id DESC"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    with store.snapshot():
        ids = [r[0] for r in store.conn.execute(sql, args)]
        return _load(store, ids)


def get_cluster(store: Store, cluster_id: int) -> ClusterView | None:
    with store.snapshot():
        found = _load(store, [cluster_id])
    return found[0] if found else None


def _load(store: Store, ids: list[int]) -> list[ClusterView]:
    if not ids:
        return []
    conn = store.conn
    marks = ",".join("?" * len(ids))
    clusters = {
        r[0]: r
        for r in conn.execute(
            f"""SELECT c.id, c.size, c.feed_count, c.first_seen, c.last_seen, c.representative_id,
                       i.title, i.url, c.updated_at
                FROM clusters c LEFT JOIN items i ON i.id = c.representative_id
                WHERE c.id IN ({marks})""",
            ids,
        )
    }
    members: dict[int, list[tuple]] = {cid: [] for cid in clusters}
    for row in conn.execute(
        f"""SELECT i.cluster_id, i.id, {_FEED_NAME}, i.title, i.url, i.published_at,
                   s.kind, s.size, s.lede_size, s.full, s.lede
            FROM items i JOIN feeds f ON f.id = i.feed_id
            LEFT JOIN signatures s ON s.item_id = i.id
            WHERE i.cluster_id IN ({marks}) ORDER BY i.published_at, i.id""",
        ids,
    ):
        members[row[0]].append(row)
    views = []
    for cid in ids:
        if cid not in clusters:
            continue
        _, size, feeds, first, last, rep_id, title, url, updated = clusters[cid]
        rows = members[cid]
        sigs = {
            r[1]: Signature.from_blobs(r[6], r[7], r[8], r[9], r[10]) for r in rows if r[9] is not None
        }
        rep_sig = sigs.get(rep_id)
        items = tuple(
            MemberView(
                id=r[1],
                feed=r[2],
                title=r[3],
                url=r[4],
                published=from_iso(r[5]),
                similarity=_similarity(rep_sig, sigs.get(r[1]), r[1] == rep_id),
            )
            for r in rows
        )
        views.append(
            ClusterView(cid, size, feeds, title or "", url, from_iso(first), from_iso(last), items,
                        from_iso(updated))  # fmt: skip
        )
    return views


def _similarity(rep: Signature | None, sig: Signature | None, is_rep: bool) -> float | None:
    if is_rep:
        return 1.0
    if rep is None or sig is None or rep.kind != sig.kind or len(rep.full) != len(sig.full):
        return None
    return round(jaccard(rep.full, sig.full), 3)


def digest_clusters(
    store: Store,
    since: datetime,
    limit: int,
    min_size: int = 1,
    tags: tuple[str, ...] = (),
) -> list[ClusterView]:
    """Clusters active (a member joined or changed) since `since`, most recently active
    first; with `tags`, only clusters carried by at least one feed with one of the tags."""
    sql = "SELECT c.id FROM clusters c WHERE c.updated_at >= ? AND c.size >= ?"
    args: list = [since.strftime("%Y-%m-%dT%H:%M:%SZ"), min_size]
    if tags:
        sql += (
            " AND EXISTS (SELECT 1 FROM items i JOIN feeds f ON f.id = i.feed_id, json_each(f.tags) t"
            f" WHERE i.cluster_id = c.id AND t.value IN ({','.join('?' * len(tags))}))"
        )
        args.extend(tags)
    sql += " ORDER BY c.updated_at DESC, c.id DESC LIMIT ?"
    args.append(limit)
    with store.snapshot():
        ids = [r[0] for r in store.conn.execute(sql, args)]
        return _load(store, ids)


def feed_rows(store: Store) -> list[dict]:
    return store.feed_summaries()


__all__ = ["ClusterView", "MemberView", "DedupSettings", "list_clusters", "get_cluster"]
