"""Terminal vs pipe output: aligned tables and relative times on a terminal, plain
tab-separated text when piped, JSON for scripts. Text from feeds is made inert first."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

# C0/C1 controls and ANSI escape sequences: a feed title must never drive the terminal.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(value: Any) -> str:
    """Text fit for a terminal or a TSV cell: escape sequences and control characters
    removed, tabs and newlines folded to spaces."""
    if value is None:
        return ""
    text = str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")
    return _ESCAPES.sub("", text)


def is_terminal(stream: TextIO = sys.stdout) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    stream: TextIO = sys.stdout,
    *,
    terminal: bool | None = None,
    max_width: int = 70,
) -> None:
    """Aligned columns on a terminal (long cells cut at max_width), TSV otherwise."""
    cells = [[safe(c) for c in row] for row in rows]
    if terminal is None:
        terminal = is_terminal(stream)
    if not terminal:
        stream.write("\t".join(headers) + "\n")
        for row in cells:
            stream.write("\t".join(row) + "\n")
        return
    cut = [[fit(c, max_width) for c in row] for row in cells]
    widths = [display_width(h) for h in headers]
    for row in cut:
        widths = [max(w, display_width(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(pad(h.upper(), w) for h, w in zip(headers, widths, strict=True))
    stream.write(line.rstrip() + "\n")
    for row in cut:
        stream.write("  ".join(pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


# Display width comes from wcwidth (the terminal's own rules: 2 columns for a wide CJK
# character, 0 for a combining mark), imported only here: it costs ~24 ms of CPU at start-up,
# which a pipe, --json or the daemon never pay.


def display_width(text: str) -> int:
    """How many terminal columns `text` takes."""
    from wcwidth import wcswidth, wcwidth

    width = wcswidth(text)
    return width if width >= 0 else sum(max(wcwidth(c), 0) for c in text)


def fit(text: str, columns: int) -> str:
    """`text` cut to at most `columns` terminal columns, ending in … when cut; a character
    keeps the combining marks that follow it."""
    from wcwidth import wcwidth

    if display_width(text) <= columns:
        return text
    kept, used = [], 0
    for char in text:
        width = max(wcwidth(char), 0)
        if used + width > columns - 1:
            break
        kept.append(char)
        used += width
    return "".join(kept) + "…"


def pad(text: str, columns: int) -> str:
    """`text` followed by spaces up to `columns` terminal columns (str.ljust counts
    characters, so a CJK title would push the next column out)."""
    return text + " " * (columns - display_width(text))


# json.dumps escapes only characters below U+0020; DEL and the C1 controls (U+0080-U+009F,
# where U+009B is a one-character CSI) would reach a terminal raw.
_JSON_C1 = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}


def print_json(value: Any, stream: TextIO = sys.stdout) -> None:
    stream.write(json.dumps(value, ensure_ascii=False, indent=2).translate(_JSON_C1))
    stream.write("\n")


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr):
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.stream = stream
        self.enabled = is_terminal(stream)

    def advance(self, step: int = 1) -> None:
        self.done += step
        if self.enabled:
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            )
            self.stream.flush()

    def keep_clear_of_logs(self) -> Progress:
        """Clear the bar's line before any log line is written (a feed's warning), so the
        warning is not written over it; the bar comes back at the next advance."""
        if self.enabled:
            self._filter = _ClearLine(self)
            for handler in _handlers():
                handler.addFilter(self._filter)
        return self

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (len(self.label) + 50) + "\r")
            self.stream.flush()

    def close(self) -> None:
        self.clear()
        if getattr(self, "_filter", None) is not None:
            for handler in _handlers():
                handler.removeFilter(self._filter)
            self._filter = None


def _handlers() -> list[logging.Handler]:
    """Where log lines go: the root's handlers, or Python's last resort (stderr) when the
    command configured none (`fetch`)."""
    return logging.getLogger().handlers or [h for h in (logging.lastResort,) if h is not None]


class _ClearLine(logging.Filter):
    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True


BOLD, RESET = "\x1b[1m", "\x1b[0m"


def use_color(stream: TextIO = sys.stdout) -> bool:
    """Escapes for bold only on a terminal that wants them (https://no-color.org, TERM=dumb)."""
    return is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 item`, `2 items` (`words` for an irregular plural)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def highlight(segments: Sequence[tuple[str, bool]], terminal: bool) -> str:
    """Text with marked parts (a search's matches): bold on a terminal, between « and »
    otherwise. The text itself is made inert first, so only our own escapes remain."""
    start, end = (BOLD, RESET) if terminal else ("«", "»")
    return "".join(f"{start}{safe(text)}{end}" if hit else safe(text) for text, hit in segments)
