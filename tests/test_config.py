"""feeds.yaml loading: strict, every error names file:line and the fix."""

import re
from pathlib import Path

import pytest

from aggregator.config import Settings, database_path, load_config, parse_config
from aggregator.errors import ConfigError

CFG = Path("/etc/agg/feeds.yaml")


def load(text: str):
    return parse_config(text, CFG)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return str(info.value)


def test_bare_urls_and_mappings() -> None:
    config = load(
        """
settings:
  interval: 15m
feeds:
  - https://a.example.com/feed.xml
  - url: http://b.example.org/rss
    name: B News
    tags: [world, tech, world]
    interval: 1h30m
  - url: https://c.example.net/atom
    tags: solo
"""
    )
    a, b, c = config.feeds
    assert (a.url, a.name, a.tags, a.interval) == ("https://a.example.com/feed.xml", None, (), None)
    assert (b.name, b.tags, b.interval) == ("B News", ("world", "tech"), 5400)
    assert c.tags == ("solo",)
    assert config.settings.interval == 900
    assert config.interval_for(a) == 900  # default from settings
    assert config.interval_for(b) == 5400  # per-feed override


def test_empty_file_gives_defaults() -> None:
    config = load("")
    assert config.feeds == ()
    assert config.settings == Settings()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("interval", "90s", 90),
        ("interval", "15m", 900),
        ("interval", "24h", 86400),
        ("interval", "7d", 7 * 86400),
        ("interval", "1h30m", 5400),
        ("timeout", "2s", 2),
        ("connect_timeout", "500ms", 0.5),
        ("max_bytes", "1KB", 1000),
        ("max_bytes", "10MB", 10_000_000),
        ("max_bytes", "512KiB", 524288),
        ("max_bytes", "2048", 2048),
        ("parse_workers", "0", 0),
        ("user_agent", "bot/1.0", "bot/1.0"),
    ],
)
def test_settings_values(key: str, value: str, expected: object) -> None:
    settings = load(f"settings:\n  {key}: {value}\n").settings
    assert getattr(settings, key) == expected


def test_dedup_settings() -> None:
    dedup = load("settings:\n  dedup:\n    window: 7d\n    threshold: 0.8\n").settings.dedup
    assert (dedup.window, dedup.threshold) == (7 * 86400, 0.8)


def test_bad_yaml_names_file_and_line() -> None:
    msg = error_of("settings:\n  interval: 15m\nfeeds:\n  - [unclosed\n")
    assert msg.startswith(f"{CFG}:")
    assert re.match(rf"{re.escape(str(CFG))}:\d+: invalid YAML", msg), msg


def test_bad_yaml_tab_indent_line() -> None:
    msg = error_of("feeds:\n\t- https://a.example.com/\n")
    assert msg.startswith(f"{CFG}:2: invalid YAML"), msg


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("settings:\n  interval: 15m\n  intervall: 1h\n", 3, "unknown key 'intervall' in settings"),
        ("feed:\n  - https://a.example.com/\n", 1, "unknown key 'feed' in the top level"),
        (
            "feeds:\n  - url: https://a.example.com/\n    titel: x\n",
            3,
            "unknown key 'titel' in feeds[0]",
        ),
        ("settings:\n  dedup:\n    treshold: 0.5\n", 3, "unknown key 'treshold' in settings.dedup"),
    ],
)
def test_unknown_key(text: str, line: int, fragment: str) -> None:
    msg = error_of(text)
    assert msg.startswith(f"{CFG}:{line}: "), msg
    assert fragment in msg
    assert "allowed keys are" in msg


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("feeds:\n  - ftp://a.example.com/feed\n", 2, "must start with http:// or https://"),
        ("feeds:\n  - example.com/feed\n", 2, "must start with http:// or https://"),
        ("feeds:\n  - https://a.example.com/\n  - url: http:///nohost\n", 3, "has no host name"),
        ("feeds:\n  - name: x\n", 2, "has no `url:`"),
    ],
)
def test_bad_url(text: str, line: int, fragment: str) -> None:
    msg = error_of(text)
    assert msg.startswith(f"{CFG}:{line}: "), msg
    assert fragment in msg


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("settings:\n  interval: 30\n", 2, "settings.interval: 30 has no unit"),
        ("settings:\n\n  timeout: soon\n", 3, "settings.timeout: 'soon' is not a duration"),
        ("settings:\n  interval: 0s\n", 2, "must be more than zero"),
        (
            "feeds:\n  - url: https://a.example.com/\n    interval: 15 minutes\n",
            3,
            "feeds[0].interval",
        ),
        ("settings:\n  max_bytes: lots\n", 2, "settings.max_bytes: 'lots' is not a size"),
        ("settings:\n  concurrency: -1\n", 2, "settings.concurrency"),
        ("settings:\n  dedup:\n    threshold: 1.5\n", 3, "between 0 and 1"),
    ],
)
def test_bad_values(text: str, line: int, fragment: str) -> None:
    msg = error_of(text)
    assert msg.startswith(f"{CFG}:{line}: "), msg
    assert fragment in msg


def test_duplicate_url_names_both_entries() -> None:
    msg = error_of(
        "feeds:\n"
        "  - https://a.example.com/feed\n"
        "  - https://b.example.com/feed\n"
        "  - url: HTTPS://A.Example.COM/feed\n"
    )
    assert msg.startswith(f"{CFG}:4: feeds[2]: duplicate URL"), msg
    assert "already feeds[0]" in msg


def test_load_config_reads_file_and_reports_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGGREGATOR_DB", raising=False)
    path = tmp_path / "feeds.yaml"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(path)
    path.write_text("feeds:\n  - https://a.example.com/\n", encoding="utf-8")
    config = load_config(path)
    assert config.path == path
    assert [f.url for f in config.feeds] == ["https://a.example.com/"]
    # relative database paths are relative to the config file
    assert database_path(config) == tmp_path / "db" / "aggregator.db"
    assert database_path(config, "/x/y.db") == Path("/x/y.db")


def test_duplicate_mapping_key_is_refused() -> None:
    # BUG (aggregator/config.py, _mapping): PyYAML's composer accepts a repeated key and
    # _mapping() keeps the last one, so a second `feeds:` block silently drops every feed
    # of the first; the strict loader should refuse it like any other typo.
    msg = error_of(
        "feeds:\n  - https://a.example.com/\nsettings:\n  timeout: 2s\nfeeds:\n  - https://b.example.com/\n"
    )
    assert msg.startswith(f"{CFG}:5: "), msg
    assert "feeds" in msg
