"""Shared pytest fixtures."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from feedserver import FeedServer


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A started local HTTP server (see tests/feedserver.py), stopped after the test."""
    with FeedServer() as server:
        yield server


@pytest.fixture
def data_dir() -> Path:
    """Directory of hand-written fixture feeds (listed in tests/data/README.md)."""
    return Path(__file__).parent / "data"
