"""HTML fragments -> plain text, with libxml2's HTML parser (through lxml).

A real parser reads what regular expressions misread: a `>` or `<` inside an attribute
value, `<!-->` and other comment forms, tags left open at the end, tags spread over lines.
What stays ours is the part no parser decides: which elements are hidden, which end a
line, and how the text is tidied (entities decoded twice, control and bidi characters
removed, NFC, runs of spaces folded, one newline between paragraphs).

Why lxml and not selectolax (lexbor): on the benchmark's entry bodies lxml was faster
(74 against 88 us per 2.7 KB body, the old regular expressions 77), lxml is one of the most
used Python packages and maintained since 2005, and the fast feed parser needs lxml anyway,
so one C dependency does both jobs.

libxml2 has two costs that are not linear, and both are bounded here before it runs: a tag
with thousands of distinct attributes (each is compared with all before it: 80,000 took
90 s) has its attributes dropped, since they never hold text; and past 2,048 nested
elements it stops, so such a document is parsed again with its inline tags removed.
"""

from __future__ import annotations

import html
import re
import threading
import unicodedata

from lxml import etree

# Elements whose content is never text a reader sees. An unclosed one hides everything
# after it, as in a browser.
HIDDEN_ELEMENTS = ("script", "style", "noscript", "template", "iframe", "object", "svg", "head")
# Elements that end a line (paragraphs, list items, headings, table rows, sections, breaks).
BLOCK_ELEMENTS = (
    "p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
    "pre", "tr", "table", "caption", "section", "article", "header", "footer", "main", "nav",
    "aside", "address", "details", "summary", "figure", "figcaption", "hr", "dd", "dt", "dl",
    "fieldset", "legend", "center",
)  # fmt: skip
# Table cells are set apart by a space: a row stays one line, as a reader sees it (on its
# own line each cell would look like a paragraph the feed repeats, see repeated_paragraphs).
CELL_ELEMENTS = ("td", "th")
_HIDDEN = frozenset(HIDDEN_ELEMENTS)
_BLOCK = frozenset(BLOCK_ELEMENTS)

# (with the bidi embeddings, overrides and isolates, U+202A-202E and U+2066-2069, which can
# reorder what a reader sees, and the noncharacters U+FFFE and U+FFFF)
_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff]"
)
# the same characters below U+0080, as bytes (tab, newline and carriage return are kept)
_ASCII_CONTROL = bytes(range(0x09)) + bytes(range(0x0B, 0x0D)) + bytes(range(0x0E, 0x20)) + b"\x7f"
_ASCII = bytes(range(0x80))
# Terminal escape sequences (CSI ... final byte, OSC ... BEL/ST): removed whole, not just
# their ESC byte, so no "[31m" debris is left in titles.
_ESCAPE_SEQUENCES = re.compile(
    r"(\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(\x1b\]|\x9d)[^\x07\x1b\x9c]{0,512}(\x07|\x1b\\|\x9c)?|\x1b[@-_]"
)
# What str.split() takes for a space once the characters above are gone and U+00A0 is a
# space: folded to " " so the rest of the folding can work with str.replace.
_WIDE_SPACES = re.compile("[\u1680\u2000-\u200a\u202f\u205f\u3000]")
_CONTROL_OR_WIDE_SPACE = re.compile(_CONTROL.pattern[:-1] + _WIDE_SPACES.pattern[1:])

# A CDATA section left inside decoded content is a feed's second wrapper around its HTML:
# the markers go, the markup inside stays markup (an unclosed one runs to the end).
_CDATA = re.compile(r"<!\[CDATA\[(.*?)(?:\]\]>|\Z)", re.S)
# Where a block element starts or ends, a newline goes into the markup before its tag (a
# space before a cell's): the parser then keeps it as text between the elements' texts.
# One pass over the bytes in C instead of a walk over the tree in Python (~5 against ~20 us
# per 2.7 KB body). Inserted inside an attribute value, a comment or a script, the
# whitespace is never seen; `</br>`, which libxml2 drops, still leaves its line break.
_BLOCK_TAG = re.compile(rf"<(?=/?(?:{'|'.join(BLOCK_ELEMENTS)})[\t\n\f\r />])".encode(), re.I)
_CELL_TAG = re.compile(rf"<(?=/?(?:{'|'.join(CELL_ELEMENTS)})[\t\n\f\r />])".encode(), re.I)

# One start tag as the HTML tokenizer reads it: its name, then attributes whose quoted
# values may hold `>` (possessive, so a long tag costs one pass).
_WS = "\t\n\f\r "
_START_TAG = re.compile(
    rf"<([A-Za-z][^{_WS}/>]*)((?:[{_WS}/]+|[^{_WS}/>][^{_WS}/>=]*"
    rf"(?:[{_WS}]*=[{_WS}]*(?:\"[^\"]*\"?|'[^']*'?|[^{_WS}>]*))?)*+)>?"
)
_ANY_TAG = re.compile(rf"</?([A-Za-z][^{_WS}/>]*)((?:[{_WS}/]+|[^{_WS}/>][^{_WS}/>=]*"
                      rf"(?:[{_WS}]*=[{_WS}]*(?:\"[^\"]*\"?|'[^']*'?|[^{_WS}>]*))?)*+)>?")  # fmt: skip
# Attribute text a start tag may have before its attributes are dropped: real tags stay far
# below (a data: URI image is the longest seen), and 4,096 characters hold at most ~2,000
# attributes, which libxml2 reads in ~15 ms.
MAX_TAG_ATTRIBUTES_CHARS = 4_096
_LONG_DOCUMENT = 2 * MAX_TAG_ATTRIBUTES_CHARS  # shorter markup cannot hold a long tag
_NESTING_POSSIBLE = 2_000  # fewer "<" than this cannot reach libxml2's depth limit (2,048)

_local = threading.local()  # an lxml parser must not be shared between threads


def _parser() -> etree.HTMLParser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        # huge_tree lifts libxml2's 10 MB text-node limit (the text would be lost past it;
        # the feed's size is already capped by max_bytes) and its depth limit to 2,048
        parser = _local.parser = etree.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True,
            default_doctype=False, collect_ids=False, huge_tree=True,
        )  # fmt: skip
    return parser


def html_to_text(markup: str | None, is_html: bool = True) -> str:
    """Plain text of an HTML fragment: tags and scripts gone, entities decoded, Unicode NFC,
    runs of spaces folded, one newline between paragraphs. Text declared plain (is_html
    False) keeps its angle brackets and ampersands and is only cleaned and folded."""
    if not markup:
        return ""
    s = markup
    if is_html:
        if "<" in s:
            s = _markup_text(s)
            if "&" in s:  # double-escaped entities (&amp;amp;): the parser decoded one level
                s = html.unescape(s)
        elif "&" in s:
            # Twice: feeds often double-escape (&amp;amp;); text never needs a literal "&amp;".
            s = html.unescape(html.unescape(s))
    return tidy_text(s)


def tidy_text(s: str) -> str:
    """Escape sequences and control characters removed, NFC, spaces folded, lines stripped,
    blank lines dropped."""
    s = s.replace("\r", "\n").replace("\xa0", " ")
    if "\x1b" in s or "\x9b" in s or "\x9d" in s:
        s = _ESCAPE_SEQUENCES.sub("", s)
    if s.isascii():  # (bytes.translate: ~1 us where the character class takes ~10)
        s = s.encode("ascii").translate(None, _ASCII_CONTROL).decode("ascii")
    else:
        # the character class runs only on the characters past ASCII (a few quotes and
        # dashes in most texts), the ASCII ones go by bytes.translate
        data = s.encode("utf-8", "surrogatepass")
        if _CONTROL_OR_WIDE_SPACE.search(data.translate(None, _ASCII).decode("utf-8", "surrogatepass")):
            s = _WIDE_SPACES.sub(" ", _CONTROL.sub("", s))
        elif len(kept := data.translate(None, _ASCII_CONTROL)) < len(data):
            s = kept.decode("utf-8", "surrogatepass")
        s = unicodedata.normalize("NFC", s)
    return fold_spaces(s)


def fold_spaces(s: str) -> str:
    """Runs of spaces folded, lines stripped, blank lines dropped, for text whose only
    spaces are " ", tab and newline; only the lines that need it are split into words
    (~8 us instead of ~28 us for a 2,700-character text)."""
    lines = []
    for line in s.replace("\t", " ").split("\n"):
        if line and ("  " in line or line[0] == " " or line[-1] == " "):
            line = " ".join(line.split())
        if line:
            lines.append(line)
    return "\n".join(lines)


def _markup_text(markup: str) -> str:
    """The text of HTML markup, a newline where a block element starts or ends."""
    if "\x1b" in markup or "\x9b" in markup or "\x9d" in markup:
        markup = _ESCAPE_SEQUENCES.sub("", markup)  # before libxml2 turns ESC into U+FFFD
    if "<![CDATA[" in markup:
        markup = _CDATA.sub(r"\1", markup)
    if len(markup) > _LONG_DOCUMENT:
        markup = _START_TAG.sub(_without_long_attributes, markup)
    parser = _parser()
    root = etree.fromstring(_marked(markup), parser)
    if root is None:  # nothing but spaces
        return ""
    if markup.count("<") >= _NESTING_POSSIBLE and _too_deep(parser):
        root = etree.fromstring(_marked(_ANY_TAG.sub(_flat_tag, markup)), parser)
        if root is None:
            return ""
    etree.strip_elements(root, *HIDDEN_ELEMENTS, with_tail=False)
    return etree.tostring(root, method="text", encoding="unicode")


def _marked(markup: str) -> bytes:
    """The markup as libxml2 reads it, with the line breaks of block elements marked."""
    return _CELL_TAG.sub(b" <", _BLOCK_TAG.sub(b"\n<", _utf8(markup)))


def _utf8(markup: str) -> bytes:
    """UTF-8 for libxml2, without the control characters it would turn into U+FFFD (they
    are removed from the text anyway; none is part of a multi-byte sequence)."""
    try:
        data = markup.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: U+FFFD, as the parser does for JSON
        data = markup.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")
    return data.translate(None, _ASCII_CONTROL)


def _without_long_attributes(m: re.Match[str]) -> str:
    return f"<{m.group(1)}>" if len(m.group(2)) > MAX_TAG_ATTRIBUTES_CHARS else m.group(0)


def _too_deep(parser: etree.HTMLParser) -> bool:
    """libxml2 stopped at its nesting limit (the text after that point is missing)."""
    return any(e.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT for e in parser.error_log)


def _flat_tag(m: re.Match[str]) -> str:
    """A tag of a document nested past libxml2's limit: hidden elements kept (their content
    stays hidden), block tags become line breaks, inline tags go."""
    name = m.group(1).lower()
    if name in _HIDDEN:
        return m.group(0)
    return "<br>" if name in _BLOCK else " " if name in CELL_ELEMENTS else ""
