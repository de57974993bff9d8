"""Durations and sizes as written in feeds.yaml and on the command line."""

import pytest

from aggregator.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 15 * 60),
        ("24h", 24 * 3600),
        ("7d", 7 * 86400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("2w", 14 * 86400),
        ("500ms", 0.5),
        ("1.5h", 5400),
        (" 10M ", 600),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "30", "15min", "m15", "-5m", "1h30", "soon", "1x"])
def test_parse_duration_refuses_nonsense(bad: str) -> None:
    with pytest.raises(ValueError, match="90s"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [30, 1.5, True, None])
def test_parse_duration_refuses_bare_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="no unit"):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "90s"), (900, "15m"), (86400, "1d"), (5400, "90m"), (0.5, "0.5s")]
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10MB", 10_000_000),
        ("1KB", 1000),
        ("512KiB", 512 * 1024),
        ("2MiB", 2 * 1024 * 1024),
        ("1GB", 10**9),
        ("1.5 mb", 1_500_000),
        ("123", 123),
        ("123B", 123),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["ten", "10XB", "MB", "10 M B", True])
def test_parse_size_refuses_nonsense(bad: object) -> None:
    with pytest.raises(ValueError, match="10MB"):
        parse_size(bad)  # type: ignore[arg-type]
