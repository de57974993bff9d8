"""Editing feeds.yaml from the command line (`feeds add`, `feeds remove`, `feeds import`).

feeds.yaml is written by hand and commented, so an edit touches only the lines of the
entries it adds or removes and leaves every other byte as it was: ruamel.yaml's composer
says where each entry of the `feeds:` list starts and ends, and the text is cut or
spliced there (re-dumping the whole document, even round-trip, re-spaces flow lists and
moves comments). The result must load with `parse_config`, list exactly the feeds
intended and keep the settings; only then does it replace the file, atomically, so a
refused edit leaves the file untouched.

Where things go: new entries after the last entry of the list (comment lines at or left
of the list's dashes stay where they are), indented like the entries already there.
Removing an entry removes its lines and the comment lines indented inside it; a comment
above it may describe a whole section, so it stays.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .config import Config, FeedConfig, check_url, feed_key, parse_config
from .errors import ConfigError, NotFound
from .files import write_atomically
from .units import format_duration

DEFAULT_DASH, DEFAULT_KEY = 2, 4  # "  - url: ..." then "    name: ..." in a new list


def add_feeds(path: Path, feeds: Sequence[FeedConfig]) -> tuple[list[FeedConfig], list[FeedConfig]]:
    """Append `feeds` to feeds.yaml (created when missing); returns (added, already there).

    A feed already followed, or twice in `feeds`, is not added again (same URL up to the
    case of scheme and host: `feed_key`). Nothing new: the file is not touched.
    """
    text = _read(path)
    config = parse_config(text, path)
    seen = {feed_key(feed.url) for feed in config.feeds}
    added: list[FeedConfig] = []
    skipped: list[FeedConfig] = []
    for feed in feeds:
        key = feed_key(feed.url)
        (skipped if key in seen else added).append(feed)
        seen.add(key)
    if added:
        new_text = _append(text, added, path)
        _replace(path, new_text, config, [f.url for f in config.feeds] + [f.url for f in added])
    return added, skipped


def add_feed(path: Path, feed: FeedConfig) -> None:
    """Append one feed to feeds.yaml; refused (file untouched) when it is already there."""
    _, skipped = add_feeds(path, [feed])
    if skipped:
        raise ConfigError(f"{path}: {feed.url} is already followed; nothing changed")


def remove_feed(
    path: Path, wanted: str, titles: Mapping[str, str | None] | None = None
) -> FeedConfig:
    """Remove the feed `wanted` names (its URL, or its name: see `matching_feeds`) from
    feeds.yaml and return it. Its stored items stay in the database, as when the line is
    deleted by hand."""
    text = _read(path)
    config = parse_config(text, path)
    found = matching_feeds(config.feeds, wanted, titles or {})
    if not found:
        raise NotFound(
            f"{path}: no feed named or at {wanted!r}; see the names with `aggregator feeds list`"
        )
    if len(found) > 1:
        urls = ", ".join(config.feeds[i].url for i in found)
        raise ConfigError(
            f"{path}: {wanted!r} names {len(found)} feeds ({urls}); remove one by its URL"
        )
    index = found[0]
    new_text = _remove(text, index, path)
    _replace(path, new_text, config, [f.url for i, f in enumerate(config.feeds) if i != index])
    return config.feeds[index]


def matching_feeds(
    feeds: Sequence[FeedConfig], wanted: str, titles: Mapping[str, str | None]
) -> list[int]:
    """Indexes of the feeds `wanted` names: its URL (`feed_key`), its feeds.yaml name, or
    for an unnamed feed the title it gave itself (`titles`, by URL), any case: the rule of
    `--feed` in `clusters list`, applied to the file."""
    key, folded = feed_key(wanted), wanted.strip().casefold()
    return [
        i
        for i, feed in enumerate(feeds)
        if feed_key(feed.url) == key
        or (feed.name or titles.get(feed.url) or "").casefold() == folded
    ]


def refuse_followed(config: Config, url: str) -> None:
    """A ConfigError when feeds.yaml already follows `url` (same `feed_key`), or when `url`
    cannot be followed at all (check_url); before anything is fetched or written."""
    problem = check_url(url)
    if problem:
        raise ConfigError(f"{url}: the URL {problem}; nothing changed")
    key = feed_key(url)
    for feed in config.feeds:
        if feed_key(feed.url) == key:
            label = f" as {feed.name!r}" if feed.name else ""
            raise ConfigError(f"{config.path}: {url} is already followed{label}; nothing changed")


# --- where the entries are ---------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    start: int  # first character of the entry's first line (its indentation)
    end: int  # just past the newline of its last line


@dataclass(frozen=True)
class _FeedsList:
    """Where the `feeds:` list is in the text and how its entries are indented."""

    kind: str  # "block", "flow" ([...] on one line), "empty" (`feeds:` / `feeds: ~`), "absent"
    entries: tuple[_Span, ...] = ()
    dash: int = DEFAULT_DASH  # column of an entry's "-"
    key: int = DEFAULT_KEY  # column of a mapping entry's keys
    node: Node | None = None  # the list's value node (flow and empty lists are rewritten)
    key_line_end: int = 0  # just past the newline of the `feeds:` line


def _locate(text: str, path: Path) -> _FeedsList:
    root = _compose(text, path)
    if root is None:
        return _FeedsList("absent")
    if not isinstance(root, MappingNode) or root.flow_style:
        raise _cannot_edit(path, "its top level is not a block mapping")
    found = next(((k, v) for k, v in root.value if k.value == "feeds"), None)
    if found is None:
        return _FeedsList("absent")
    key_node, value = found
    key_line_end = _line_end(text, key_node.end_mark.index)
    if isinstance(value, ScalarNode):  # `feeds:` or `feeds: ~` (parse_config allows only null)
        return _FeedsList("empty", node=value, key_line_end=key_line_end)
    if not isinstance(value, SequenceNode):
        raise _cannot_edit(path, "`feeds` is not a list")
    if value.flow_style:
        if "\n" in text[value.start_mark.index : value.end_mark.index]:
            raise _cannot_edit(path, "its `feeds: [...]` list spans several lines")
        return _FeedsList("flow", node=value, key_line_end=key_line_end)
    spans: list[_Span] = []
    dash, key = DEFAULT_DASH, None
    for item in value.value:
        dash_at = text.rindex("-", 0, item.start_mark.index)
        start = text.rindex("\n", 0, dash_at) + 1
        end = _inner_comments_end(text, _line_end(text, _content_end(item)), dash_at - start)
        if not spans:
            dash = dash_at - start
        if key is None and isinstance(item, MappingNode):
            key = item.start_mark.column
        spans.append(_Span(start, end))
    key = max(key or 0, dash + 2)
    return _FeedsList("block", tuple(spans), dash, key, value, key_line_end)


def _compose(text: str, path: Path) -> Node | None:
    """The node tree of `text`, with marks at character offsets of `text`. libyaml's
    composer first (ruamel.yaml's "safe" one with ruamel.yaml.clib: 5x faster than the
    pure-Python one on 3,000 feeds); it does not count a byte-order mark, so a space
    stands in for it. The pure one for what libyaml's YAML 1.1 refuses (`[a:b]`)."""
    try:
        return YAML(typ="safe").compose(" " + text[1:] if text.startswith("\ufeff") else text)
    except YAMLError:
        pass
    try:
        return YAML().compose(text)
    except YAMLError as exc:  # parse_config accepted it: a ruamel/PyYAML difference
        raise _cannot_edit(path, f"ruamel.yaml cannot read it: {exc}") from None


def _content_end(node: Node) -> int:
    """Where the node's own text ends: a block collection's end mark lies after the
    comments and blank lines that follow it, which belong to what comes next."""
    if isinstance(node, MappingNode) and not node.flow_style:
        last_key, last_value = node.value[-1]
        if (
            isinstance(last_value, ScalarNode)
            and last_value.start_mark.index == last_value.end_mark.index
        ):
            return last_key.end_mark.index  # `key:` with no value: its mark is the next token
        return _content_end(last_value)
    if isinstance(node, SequenceNode) and not node.flow_style and node.value:
        return _content_end(node.value[-1])
    return node.end_mark.index


def _line_end(text: str, index: int) -> int:
    """Just past the newline ending the line that holds `index` (end of text if none)."""
    if index > 0 and text[index - 1] == "\n":
        return index
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _inner_comments_end(text: str, end: int, dash: int) -> int:
    """Extend an entry over the comment lines right after it indented inside it."""
    while end < len(text):
        newline = text.find("\n", end)
        line = text[end : len(text) if newline < 0 else newline + 1]
        stripped = line.lstrip(" ")
        if not stripped.startswith("#") or len(line) - len(stripped) <= dash:
            break
        end += len(line)
    return end


# --- the edits -----------------------------------------------------------------------------


def _append(text: str, feeds: Sequence[FeedConfig], path: Path) -> str:
    where = _locate(text, path)
    nl = _newline(text)
    new = "".join(_entry(feed, where.dash, where.key, nl) for feed in feeds)
    if where.kind == "absent":
        lead = text if not text or text.endswith(("\n", "\r")) else text + nl
        return f"{lead}feeds:{nl}{new}"
    if where.kind == "block":
        at = where.entries[-1].end
        if at == len(text) and not text.endswith("\n"):
            return text + nl + new
        return text[:at] + new + text[at:]
    # empty or flow: the list becomes a block list under the `feeds:` line
    assert where.node is not None
    old = ""
    if where.kind == "flow":
        old = "".join(
            f"{' ' * where.dash}- {text[item.start_mark.index : item.end_mark.index]}{nl}"
            for item in where.node.value
        )
    return _as_block(text, where, old + new, nl)


def _remove(text: str, index: int, path: Path) -> str:
    where = _locate(text, path)
    if where.kind == "flow":
        assert where.node is not None
        nl = _newline(text)
        kept = "".join(
            f"{' ' * where.dash}- {text[item.start_mark.index : item.end_mark.index]}{nl}"
            for i, item in enumerate(where.node.value)
            if i != index
        )
        return _as_block(text, where, kept, nl)
    if where.kind != "block":
        raise _cannot_edit(path, "its `feeds:` list was not found")
    span = where.entries[index]
    return text[: span.start] + text[span.end :]


def _as_block(text: str, where: _FeedsList, entries: str, nl: str) -> str:
    """Replace the value of `feeds:` (`[...]`, `~` or nothing) with block `entries`, keeping
    a comment on the `feeds:` line."""
    assert where.node is not None
    line_end = where.key_line_end
    content_end = len(text[:line_end].rstrip("\r\n"))
    start, end = where.node.start_mark.index, where.node.end_mark.index
    if start >= content_end:  # `feeds:` with nothing after it (its mark is the next token)
        start = end = content_end
    head, rest = text[:start].rstrip(" "), text[end:content_end]
    if not entries:
        rest = " []" + rest  # a block list cannot be empty
    return f"{head}{rest}{nl}{entries}{text[line_end:]}"


def _entry(feed: FeedConfig, dash: int, key: int, nl: str) -> str:
    """One `- url: ...` entry, its scalars quoted wherever YAML 1.1 (PyYAML) would read
    them as something else than text (`yes`, `1.0`, `~`)."""
    mapping = CommentedMap(url=feed.url)
    if feed.name:
        mapping["name"] = feed.name
    if feed.tags:
        tags = CommentedSeq(feed.tags)
        tags.fa.set_flow_style()
        mapping["tags"] = tags
    if feed.interval is not None:
        mapping["interval"] = format_duration(feed.interval)
    yaml = YAML()
    yaml.version = (1, 1)
    yaml.width = 1 << 30  # never fold a long URL or name onto a second line
    out = io.StringIO()
    yaml.dump(mapping, out)
    lines = [ln for ln in out.getvalue().splitlines() if ln not in ("%YAML 1.1", "---")]
    first = " " * dash + "-" + " " * (key - dash - 1) + lines[0] + nl
    return first + "".join(" " * key + line + nl for line in lines[1:])


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


# --- reading and writing -----------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None


def _replace(path: Path, new_text: str, before: Config, urls: list[str]) -> None:
    """Write `new_text` only if it loads, lists exactly `urls` and keeps the settings."""
    try:
        after = parse_config(new_text, path)
    except ConfigError as exc:
        raise _cannot_edit(path, f"the edited file would not load ({exc})") from None
    if [f.url for f in after.feeds] != urls or after.settings != before.settings:
        raise _cannot_edit(path, "the edit would change more than the feeds asked for")
    try:
        write_atomically(path, new_text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror}; nothing changed") from None


def _cannot_edit(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"{path}: cannot edit this file automatically: {why}; nothing changed, edit it by hand"
    )
