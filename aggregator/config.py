"""feeds.yaml: the source of truth for what is followed, and every default in one place.

Loading is strict: an unknown key, a bad URL or duration, or a duplicate feed fails with one
message naming the file, the line and the fix, so a typo never silently changes behaviour.
The file is read as YAML 1.2 (ruamel.yaml): yes/no/on/off are words, not booleans, so a
feed named NO keeps its name (`http: off` and `http: false` both turn the server off).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import PROJECT_URL, __version__
from .errors import ConfigError
from .units import parse_duration, parse_size

DEFAULT_CONFIG_PATH = "feeds.yaml"
CONFIG_ENV = "AGGREGATOR_CONFIG"
DB_ENV = "AGGREGATOR_DB"


@dataclass(frozen=True)
class DedupSettings:
    """Near-duplicate detection knobs; defaults chosen by bench/dedup_quality.py."""

    window: float = 14 * 86400  # only items first seen this recently are indexed
    num_perm: int = 128  # MinHash permutations for the full-text signature
    lede_num_perm: int = 64  # permutations for the lede (opening words) signature
    shingles: str = "words"  # "words" (word n-grams) or "chars" (char n-grams): measured choice
    shingle_words: int = 3  # word n-gram size for items with enough text
    lede_words: int = 60  # opening words compared to catch truncated copies
    short_words: int = 25  # below this many words an item is "short": char n-grams
    short_chars: int = 5  # char n-gram size for short items
    threshold: float = 0.5  # estimated Jaccard of full text to count as a copy
    lede_threshold: float = 0.5  # estimated Jaccard of the ledes for the containment path
    containment: float = 0.7  # estimated containment of the shorter text in the longer
    short_threshold: float = 0.6  # estimated Jaccard for short items


@dataclass(frozen=True)
class StorySettings:
    """The story tier above the copy clusters (`settings.stories`, aggregator/dedup/stories.py);
    the threshold chosen by bench/story_quality.py for pair precision >= 0.9."""

    enabled: bool = True  # off: every copy cluster is a story of its own
    window: float = 72 * 3600  # clusters this far apart in time never share a story
    threshold: float = 0.15  # weighted term cosine a cluster needs to join a story


@dataclass(frozen=True)
class DigestSettings:
    """The published digest feed (`settings.digest`)."""

    window: float = 48 * 3600  # clusters active this recently are in the digest
    max_entries: int = 100
    min_size: int = 1  # only stories carried at least this many times
    tags: tuple[str, ...] = ()  # only stories from feeds with one of these tags
    format: str = "atom"  # format of the file at settings.digest_path: atom | rss | json
    title: str = "aggregator digest"
    # ranking (aggregator/store/ranking.py): score = rank_sources × log2(outlets) − age / rank_recency
    rank_sources: float = 1.0
    rank_recency: float = 12 * 3600
    group: str = "stories"  # one entry per story (with its other coverage) | per copy cluster: clusters


@dataclass(frozen=True)
class Settings:
    """Global settings (`settings:` in feeds.yaml)."""

    database: str = "db/aggregator.db"
    interval: float = 30 * 60
    timeout: float = 20.0
    connect_timeout: float = 10.0
    max_bytes: int = 10 * 1000 * 1000
    user_agent: str = f"aggregator/{__version__} (+{PROJECT_URL})"
    # fetches in flight in all. Politeness is per host (per_host); across hosts a modern
    # client keeps many requests open (browsers: 256 sockets, 6 per host). Miniflux runs
    # 16 workers with no per-host limit, reader 1 by default. At 32, a warm poll of 1,000
    # feeds 50-300 ms away waited 5.5 s on latency alone; 64 halves that, still 2 per host.
    concurrency: int = 64
    per_host: int = 2
    max_redirects: int = 5
    parse_workers: int = 2  # processes parsing feeds in parallel; 0 parses in a thread
    retention: float = 90 * 86400  # items first seen longer ago are pruned daily
    check_every: float = 5.0  # how often the daemon looks for due feeds
    digest_path: str = "db/digest.xml"
    http: str = "127.0.0.1:8080"  # where the daemon serves the digest; "off" disables
    # PostgreSQL, several workers (aggregator/store/leases.py): how long a worker's claim on
    # a due feed lasts. It is renewed every third of it while the worker runs, so it only
    # matters when a worker dies: its feeds wait this long, then another worker takes them.
    lease: float = 600.0
    dedup: DedupSettings = field(default_factory=DedupSettings)
    digest: DigestSettings = field(default_factory=DigestSettings)
    stories: StorySettings = field(default_factory=StorySettings)

    def http_address(self) -> tuple[str, int] | None:
        """(host, port) to serve on, or None when serving is off."""
        return parse_http(self.http)


def parse_http(text: str) -> tuple[str, int] | None:
    """`127.0.0.1:8080`, `[::1]:8080`, `:8080` (loopback) or `off`."""
    if text.strip().lower() in ("off", "false", "no", ""):
        return None
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (like 127.0.0.1:8080) or off")
    return (host.strip("[]") or "127.0.0.1", int(port))


@dataclass(frozen=True)
class FeedConfig:
    """One followed feed as written in feeds.yaml."""

    url: str
    name: str | None = None
    tags: tuple[str, ...] = ()  # also its OPML folders: "Tech/Apple" is Apple inside Tech
    interval: float | None = None  # None: settings.interval


@dataclass(frozen=True)
class Config:
    path: Path
    settings: Settings
    feeds: tuple[FeedConfig, ...]

    def interval_for(self, feed: FeedConfig) -> float:
        return feed.interval if feed.interval is not None else self.settings.interval


_DURATION_SETTINGS = {"interval", "timeout", "connect_timeout", "retention", "check_every", "lease"}
_SIZE_SETTINGS = {"max_bytes"}
_INT_SETTINGS = {"concurrency", "per_host", "max_redirects", "parse_workers"}
_DEDUP_DURATIONS = {"window"}
_FEED_KEYS = {"url", "name", "tags", "interval"}


class _Where:
    """Turns YAML nodes into `file:line` for messages."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, node: Node | None) -> str:
        if node is None:
            return str(self.path)
        return f"{self.path}:{node.start_mark.line + 1}"


def _mapping(node: Node, where: _Where | None = None) -> dict[str, tuple[Node, Node]]:
    """Keys of a mapping node; a repeated key is an error (YAML would keep the last one
    silently, so a second `feeds:` block would drop every feed of the first)."""
    found: dict[str, tuple[Node, Node]] = {}
    for k, v in node.value:
        if k.value in found:
            at = where(k) if where else f"line {k.start_mark.line + 1}"
            raise ConfigError(f"{at}: duplicate key {k.value!r}; keep only one of them")
        found[k.value] = (k, v)
    return found


def _scalar(loader: SafeConstructor, node: Node) -> Any:
    return loader.construct_object(node, deep=True)


def _check_keys(where: _Where, node: Node, allowed: set[str], what: str) -> None:
    for key_node, _ in node.value:
        if key_node.value not in allowed:
            raise ConfigError(
                f"{where(key_node)}: unknown key {key_node.value!r} in {what}; "
                f"allowed keys are {', '.join(sorted(allowed))}"
            )


def check_url(url: str) -> str | None:
    """Why `url` cannot be fetched as a feed, or None when it is fine."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host name"
    return None


def feed_key(url: str) -> str:
    """Two feed URLs are the same feed when they differ only in scheme/host case."""
    parts = urlsplit(url.strip())
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl()


def _settings(loader: SafeConstructor, where: _Where, node: Node | None) -> Settings:
    if node is None or (isinstance(node, ScalarNode) and node.value in ("", "~", "null")):
        return Settings()
    if not isinstance(node, MappingNode):
        raise ConfigError(f"{where(node)}: `settings` must be a mapping of key: value")
    allowed = {f.name for f in fields(Settings)}
    _check_keys(where, node, allowed, "settings")
    values: dict[str, Any] = {}
    for name, (_, value_node) in _mapping(node, where).items():
        if name == "dedup":
            values[name] = _dedup(loader, where, value_node)
            continue
        if name == "digest":
            values[name] = _digest(loader, where, value_node)
            continue
        if name == "stories":
            values[name] = _stories(loader, where, value_node)
            continue
        if name == "http":
            raw = _scalar(loader, value_node)
            try:
                parse_http("off" if raw is False else str(raw))
            except ValueError as exc:
                raise ConfigError(f"{where(value_node)}: settings.http: {exc}") from None
            values[name] = "off" if raw is False else str(raw)
            continue
        raw = _scalar(loader, value_node)
        try:
            if name in _DURATION_SETTINGS:
                values[name] = parse_duration(raw)
                if values[name] <= 0:
                    raise ValueError(f"{raw!r} must be more than zero")
            elif name in _SIZE_SETTINGS:
                values[name] = parse_size(raw)
                if values[name] <= 0:
                    raise ValueError(f"{raw!r} must be more than zero")
            elif name in _INT_SETTINGS:
                if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                    raise ValueError(f"{raw!r} must be a whole number >= 0")
                values[name] = raw
            else:
                if not isinstance(raw, str) or not raw.strip():
                    raise ValueError(f"{raw!r} must be a non-empty string")
                values[name] = raw
        except ValueError as exc:
            raise ConfigError(f"{where(value_node)}: settings.{name}: {exc}") from None
    if values.get("concurrency") == 0 or values.get("per_host") == 0:
        raise ConfigError(f"{where(node)}: settings.concurrency and per_host must be >= 1")
    return Settings(**values)


def _dedup(loader: SafeConstructor, where: _Where, node: Node) -> DedupSettings:
    if not isinstance(node, MappingNode):
        raise ConfigError(f"{where(node)}: `settings.dedup` must be a mapping of key: value")
    defaults = DedupSettings()
    _check_keys(where, node, {f.name for f in fields(DedupSettings)}, "settings.dedup")
    values: dict[str, Any] = {}
    for name, (_, value_node) in _mapping(node, where).items():
        raw = _scalar(loader, value_node)
        try:
            if name in _DEDUP_DURATIONS:
                values[name] = parse_duration(raw)
            elif name == "shingles":
                if raw not in ("words", "chars"):
                    raise ValueError(f"{raw!r} must be words or chars")
                values[name] = raw
            elif isinstance(getattr(defaults, name), int):
                if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
                    raise ValueError(f"{raw!r} must be a whole number > 0")
                values[name] = raw
            else:
                if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not 0 < raw <= 1:
                    raise ValueError(f"{raw!r} must be a number between 0 and 1")
                values[name] = float(raw)
        except ValueError as exc:
            raise ConfigError(f"{where(value_node)}: settings.dedup.{name}: {exc}") from None
    return DedupSettings(**values)


def _digest(loader: SafeConstructor, where: _Where, node: Node) -> DigestSettings:
    if not isinstance(node, MappingNode):
        raise ConfigError(f"{where(node)}: `settings.digest` must be a mapping of key: value")
    _check_keys(where, node, {f.name for f in fields(DigestSettings)}, "settings.digest")
    values: dict[str, Any] = {}
    for name, (_, value_node) in _mapping(node, where).items():
        raw = _scalar(loader, value_node)
        try:
            if name in ("window", "rank_recency"):
                values[name] = parse_duration(raw)
                if values[name] <= 0:
                    raise ValueError(f"{raw!r} must be longer than 0s")
            elif name == "rank_sources":
                if not isinstance(raw, int | float) or isinstance(raw, bool) or raw < 0:
                    raise ValueError(f"{raw!r} must be a number >= 0")
                values[name] = float(raw)
            elif name in ("max_entries", "min_size"):
                if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
                    raise ValueError(f"{raw!r} must be a whole number > 0")
                values[name] = raw
            elif name == "tags":
                tags = [raw] if isinstance(raw, str) else raw
                if not isinstance(tags, list):
                    raise ValueError("must be a list like [world, tech]")
                values[name] = tuple(str(t) for t in tags)
            elif name == "format":
                if raw not in ("atom", "rss", "json"):
                    raise ValueError(f"{raw!r} must be atom, rss or json")
                values[name] = raw
            elif name == "group":
                if raw not in ("stories", "clusters"):
                    raise ValueError(f"{raw!r} must be stories or clusters")
                values[name] = raw
            else:
                values[name] = str(raw)
        except ValueError as exc:
            raise ConfigError(f"{where(value_node)}: settings.digest.{name}: {exc}") from None
    return DigestSettings(**values)


def _stories(loader: SafeConstructor, where: _Where, node: Node) -> StorySettings:
    if not isinstance(node, MappingNode):
        raise ConfigError(f"{where(node)}: `settings.stories` must be a mapping of key: value")
    _check_keys(where, node, {f.name for f in fields(StorySettings)}, "settings.stories")
    values: dict[str, Any] = {}
    for name, (_, value_node) in _mapping(node, where).items():
        raw = _scalar(loader, value_node)
        try:
            if name == "enabled":
                if not isinstance(raw, bool):
                    raise ValueError(f"{raw!r} must be true or false")
                values[name] = raw
            elif name == "window":
                values[name] = parse_duration(raw)
                if values[name] <= 0:
                    raise ValueError(f"{raw!r} must be longer than 0s")
            else:
                if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 < raw <= 1:
                    raise ValueError(f"{raw!r} must be a number between 0 and 1")
                values[name] = float(raw)
        except ValueError as exc:
            raise ConfigError(f"{where(value_node)}: settings.stories.{name}: {exc}") from None
    return StorySettings(**values)


def _feed(loader: SafeConstructor, where: _Where, node: Node, index: int) -> FeedConfig:
    entry = f"feeds[{index}]"
    if isinstance(node, ScalarNode):
        url = str(_scalar(loader, node) or "").strip()
        problem = check_url(url)
        if problem:
            raise ConfigError(f"{where(node)}: {entry}: URL {url!r} {problem}")
        return FeedConfig(url=url)
    if not isinstance(node, MappingNode):
        raise ConfigError(f"{where(node)}: {entry} must be a URL or a mapping with `url:`")
    _check_keys(where, node, _FEED_KEYS, entry)
    items = _mapping(node, where)
    if "url" not in items:
        raise ConfigError(f"{where(node)}: {entry} has no `url:`; add the feed's address")
    url_node = items["url"][1]
    url = str(_scalar(loader, url_node) or "").strip()
    problem = check_url(url)
    if problem:
        raise ConfigError(f"{where(url_node)}: {entry}: URL {url!r} {problem}")
    name = None
    if "name" in items:
        raw = _scalar(loader, items["name"][1])
        if raw is not None:
            name = str(raw).strip() or None
    tags: tuple[str, ...] = ()
    if "tags" in items:
        tag_node = items["tags"][1]
        raw = _scalar(loader, tag_node)
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(t, (str, int)) for t in raw):
            raise ConfigError(f"{where(tag_node)}: {entry}.tags must be a list like [world, tech]")
        tags = tuple(dict.fromkeys(str(t).strip() for t in raw if str(t).strip()))
    interval = None
    if "interval" in items:
        int_node = items["interval"][1]
        try:
            interval = parse_duration(_scalar(loader, int_node))
            if interval <= 0:
                raise ValueError("must be more than zero")
        except ValueError as exc:
            raise ConfigError(f"{where(int_node)}: {entry}.interval: {exc}") from None
    return FeedConfig(url=url, name=name, tags=tags, interval=interval)


def parse_config(text: str, path: Path) -> Config:
    """Config from feeds.yaml text; `path` is only used in messages and for relative paths."""
    where = _Where(path)
    # ruamel.yaml's safe loader, with libyaml's C parser from ruamel.yaml.clib (8x faster
    # than the pure-Python one on a list of thousands of feeds)
    yaml = YAML(typ="safe")
    try:
        root = yaml.compose(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}; fix the syntax") from None
    if root is None:
        return Config(path=path, settings=Settings(), feeds=())
    if not isinstance(root, MappingNode):
        raise ConfigError(f"{where(root)}: expected a mapping with `settings:` and `feeds:`")
    _check_keys(where, root, {"settings", "feeds"}, "the top level")
    loader = yaml.constructor
    top = _mapping(root, where)
    settings = _settings(loader, where, top.get("settings", (None, None))[1])
    feeds_node = top.get("feeds", (None, None))[1]
    feeds: list[FeedConfig] = []
    if feeds_node is not None and not (
        isinstance(feeds_node, ScalarNode) and feeds_node.value in ("", "~", "null")
    ):
        if not isinstance(feeds_node, SequenceNode):
            raise ConfigError(f"{where(feeds_node)}: `feeds` must be a list of URLs or mappings")
        seen: dict[str, int] = {}
        for i, node in enumerate(feeds_node.value):
            feed = _feed(loader, where, node, i)
            key = feed_key(feed.url)
            if key in seen:
                raise ConfigError(
                    f"{where(node)}: feeds[{i}]: duplicate URL {feed.url} "
                    f"(already feeds[{seen[key]}]); remove one of them"
                )
            seen[key] = i
            feeds.append(feed)
    return Config(path=path, settings=settings, feeds=tuple(feeds))


def dump_yaml(doc: Any) -> str:
    """YAML text of plain data, keys in the order given and any script as itself: how
    `aggregator demo` (and the tests) write a feeds.yaml that parse_config reads back."""
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    yaml.allow_unicode = True
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read feeds.yaml from `path`, $AGGREGATOR_CONFIG or ./feeds.yaml."""
    p = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: config file not found; create it or pass --config PATH "
            f"(or set ${CONFIG_ENV})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config: {exc}") from None
    return parse_config(text, p)


def relative_to_config(config: Config, path: str) -> Path:
    """Paths in feeds.yaml are relative to the file itself."""
    p = Path(path)
    return p if p.is_absolute() else config.path.parent / p


def database_path(config: Config, override: str | None = None) -> Path | str:
    """--db, then $AGGREGATOR_DB, then settings.database (a file relative to the config
    file, or a postgresql:// URL, returned as the string it is)."""
    chosen = override or os.environ.get(DB_ENV) or config.settings.database
    if chosen.startswith(("postgresql://", "postgres://")):
        return chosen
    if override or os.environ.get(DB_ENV):
        return Path(chosen)
    db = Path(chosen)
    return db if db.is_absolute() else config.path.parent / db
