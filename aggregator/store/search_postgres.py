"""`aggregator search` and `clusters list --query` on PostgreSQL: the query language of the
SQLite path (FTS5's: plain words, "phrases", prefix*, title:/text:, AND, OR, NOT, NEAR(),
parentheses) translated to a tsquery over items_search (migrations/postgres/013: one
tsvector per item, the title weighted A, the text B), ranked by ts_rank_cd, marked up by
ts_headline.

The translation is pure (query text -> tree -> tsquery text) but for one step: the database
itself turns the query's words into lexemes, with the very function that made the
documents (to_tsvector over search_words), so a word of a query and the same word in an
item are always the same lexeme (accents, case, how the parser splits "covid-19").

Where it differs from FTS5, by choice (README "Search on PostgreSQL"):
- two parts side by side are ANDed whatever they are: `(rail OR bus) strike` works, where
  FTS5 asks for `(rail OR bus) AND strike`;
- `^` (a phrase at the start of a column) has no tsquery counterpart: a SearchError says so;
- NEAR(a b, N) becomes every allowed distance in either order (a <1> b | b <1> a | ...
  a <N+1> b ...); NEAR() of three or more phrases, or with N over MAX_NEAR, is a SearchError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..timeutil import iso
from .database import Store
from .search import (
    MARK_END,
    MARK_START,
    SNIPPET_WORDS,
    TEXT_WEIGHT,
    TITLE_WEIGHT,
    SearchError,
    syntax_hint,
)

CONFIG = "aggregator_search"  # the text search configuration of migrations/postgres/013
WEIGHTS = {"title": "A", "text": "B"}  # search_document's setweight per column
COLUMNS = frozenset(WEIGHTS)
NEAR_DEFAULT = 10  # FTS5's default NEAR distance
MAX_NEAR = 100  # NEAR(a b, N) is 4(N+1) tsquery phrases: keep it small
# ts_rank_cd's weights of {D, C, B, A}: a title word counts TITLE_WEIGHT / TEXT_WEIGHT times
# a text word, as bm25's column weights do on SQLite
RANK_WEIGHTS = [0.0, 0.0, TEXT_WEIGHT / TITLE_WEIGHT, 1.0]
RANK_NORMALISATION = 1  # rank / (1 + log(document length)): as bm25, a long text counts less
TITLE_MARKS = f"StartSel={MARK_START}, StopSel={MARK_END}, HighlightAll=true"
SNIPPET_MARKS = (
    f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords={SNIPPET_WORDS}, "
    f"MinWords={SNIPPET_WORDS - 1}, ShortWord=0, MaxFragments=1"
)

# ---------------------------------------------------------------- the query as a tree


@dataclass(frozen=True)
class Piece:
    """One string of a phrase (a bare word or a quoted string), `prefix` if it ends in *."""

    text: str
    prefix: bool = False


@dataclass(frozen=True)
class Phrase:
    """Strings joined by + (a quoted string is one): their tokens in a row, in `columns`."""

    pieces: tuple[Piece, ...]
    columns: frozenset[str] = COLUMNS
    initial: bool = False  # ^: at the start of a column


@dataclass(frozen=True)
class Near:
    phrases: tuple[Phrase, ...]
    distance: int = NEAR_DEFAULT
    columns: frozenset[str] = COLUMNS


@dataclass(frozen=True)
class Group:
    """`op`: "or", "and" (explicit AND) or "seq" (parts side by side: an implicit AND)."""

    op: str
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    keep: Node
    drop: Node


Node = Phrase | Near | Group | Not


class QueryProblem(Exception):
    """What is wrong with a query, worded as FTS5 words it."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "word" (bare), "string" (quoted), AND/OR/NOT, a punctuation mark, "end"
    value: str

    @property
    def near(self) -> str:
        return self.value if self.kind != "string" else f'"{self.value}"'


_BARE = re.compile(r"[0-9A-Za-z_\x1a\x80-\U0010ffff]+")  # FTS5's bareword characters
_SPACE = " \t\n\r\f\v"
_MARKS = "(){}:,+*-^"


def _tokens(query: str) -> list[_Token]:
    out, i = [], 0
    while True:
        while i < len(query) and query[i] in _SPACE:
            i += 1
        if i == len(query):
            out.append(_Token("end", ""))
            return out
        if query[i] == '"':  # "" inside is one "
            parts, j = [], i + 1
            while True:
                k = query.find('"', j)
                if k < 0:
                    raise QueryProblem("unterminated string")
                parts.append(query[j:k])
                if not query.startswith('"', k + 1):
                    break
                parts.append('"')
                j = k + 2
            out.append(_Token("string", "".join(parts)))
            i = k + 1
        elif m := _BARE.match(query, i):
            word = m.group()
            out.append(_Token(word if word in ("AND", "OR", "NOT") else "word", word))
            i = m.end()
        elif query[i] in _MARKS:
            out.append(_Token(query[i], query[i]))
            i += 1
        else:
            raise QueryProblem(f'syntax error near "{query[i]}"')


class _Parser:
    """FTS5's grammar, by precedence from loosest: OR, AND, NOT, parts side by side; a
    column filter (title:, {title text}:, -text:) applies to the one part after it."""

    def __init__(self, query: str):
        self.tokens = _tokens(query)
        self.at = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.at + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.at += 1
        return token

    def accept(self, kind: str) -> bool:
        if self.peek().kind == kind:
            self.at += 1
            return True
        return False

    def expect(self, kind: str) -> None:
        if not self.accept(kind):
            raise self.problem()

    def problem(self) -> QueryProblem:
        return QueryProblem(f'syntax error near "{self.peek().near}"')

    def query(self) -> Node:
        node = self.any_of(COLUMNS)
        if self.peek().kind != "end":
            raise self.problem()
        return node

    def any_of(self, columns: frozenset[str]) -> Node:
        parts = [self.all_of(columns)]
        while self.accept("OR"):
            parts.append(self.all_of(columns))
        return parts[0] if len(parts) == 1 else Group("or", tuple(parts))

    def all_of(self, columns: frozenset[str]) -> Node:
        parts = [self.but_not(columns)]
        while self.accept("AND"):
            parts.append(self.but_not(columns))
        return parts[0] if len(parts) == 1 else Group("and", tuple(parts))

    def but_not(self, columns: frozenset[str]) -> Node:
        node = self.side_by_side(columns)
        while self.accept("NOT"):
            node = Not(node, self.side_by_side(columns))
        return node

    def side_by_side(self, columns: frozenset[str]) -> Node:
        parts = [self.part(columns)]
        while self.peek().kind in ("word", "string", "(", "{", "-", "^"):
            parts.append(self.part(columns))
        return parts[0] if len(parts) == 1 else Group("seq", tuple(parts))

    def part(self, columns: frozenset[str]) -> Node:
        first = self.peek()
        if first.kind in ("-", "{") or (first.kind == "word" and self.peek(1).kind == ":"):
            columns = columns & self.column_filter()
            self.expect(":")
        if self.accept("("):
            node = self.any_of(columns)
            self.expect(")")
            return node
        if self.peek().value == "NEAR" and self.peek().kind == "word" and self.peek(1).kind == "(":
            return self.near(columns)
        return self.phrase(columns)

    def column_filter(self) -> frozenset[str]:
        others = self.accept("-")
        names = []
        if self.accept("{"):
            while self.peek().kind == "word":
                names.append(self.take().value)
            if not names:
                raise self.problem()
            self.expect("}")
        elif self.peek().kind == "word":
            names.append(self.take().value)
        else:
            raise self.problem()
        for name in names:
            if name.lower() not in COLUMNS:
                raise QueryProblem(f"no such column: {name}")
        chosen = frozenset(n.lower() for n in names)
        return COLUMNS - chosen if others else chosen

    def phrase(self, columns: frozenset[str]) -> Phrase:
        initial = self.accept("^")
        pieces = [self.piece()]
        while self.accept("+"):
            pieces.append(self.piece())
        return Phrase(tuple(pieces), columns, initial)

    def piece(self) -> Piece:
        if self.peek().kind not in ("word", "string"):
            raise self.problem()
        return Piece(self.take().value, self.accept("*"))

    def near(self, columns: frozenset[str]) -> Near:
        self.take()
        self.expect("(")
        phrases = [self.phrase(columns)]
        while self.peek().kind in ("word", "string", "^"):
            phrases.append(self.phrase(columns))
        distance = NEAR_DEFAULT
        if self.accept(","):
            token = self.take()
            if token.kind != "word" or not token.value.isdigit():
                raise QueryProblem(f'expected integer, got "{token.near}"')
            distance = int(token.value)
        self.expect(")")
        return Near(tuple(phrases), distance, columns)


def parse(query: str) -> Node:
    """An FTS5 query (what search.fts_query makes of the user's text) as a tree; a
    QueryProblem where FTS5 would report a syntax error."""
    return _Parser(query).query()


def strings(node: Node) -> list[str]:
    """Every string of the query, in order (for the database to cut into lexemes)."""
    if isinstance(node, Phrase):
        return [p.text for p in node.pieces]
    if isinstance(node, Near):
        return [s for p in node.phrases for s in strings(p)]
    if isinstance(node, Not):
        return strings(node.keep) + strings(node.drop)
    return [s for part in node.parts for s in strings(part)]


# ---------------------------------------------------------------- the tree as a tsquery

# What a part of the tree renders to, besides tsquery text: NOTHING can match, or EMPTY (a
# phrase without a single word, such as "!!!"): FTS5 leaves an EMPTY out of parts side by
# side and of phrases and NEAR groups; anywhere else it matches nothing.
NOTHING, EMPTY = None, ""
Lexemes = Mapping[str, Sequence[str]]


def to_tsquery(node: Node, lexemes: Lexemes) -> str | None:
    """The tree as tsquery text, `lexemes` giving each string's lexemes in order; None when
    nothing can match. A QueryProblem for what tsquery cannot express."""
    return _render(node, lexemes) or None


def _render(node: Node, lexemes: Lexemes) -> str | None:
    if isinstance(node, Phrase):
        return _phrase(_words(node, lexemes), node.columns)
    if isinstance(node, Near):
        return _near(node, lexemes)
    if isinstance(node, Not):
        keep, drop = _render(node.keep, lexemes), _render(node.drop, lexemes)
        if not keep:
            return NOTHING
        return f"( {keep} & !{drop} )" if drop else keep
    parts = [_render(part, lexemes) for part in node.parts]
    if node.op == "seq":
        parts = [p for p in parts if p != EMPTY]
    if node.op == "or":
        parts = [p for p in parts if p]
    if not parts or any(not p for p in parts):
        return NOTHING
    return (
        parts[0]
        if len(parts) == 1
        else "( " + (" | " if node.op == "or" else " & ").join(parts) + " )"
    )


def _words(phrase: Phrase, lexemes: Lexemes) -> list[tuple[str, bool]]:
    """(lexeme, is a prefix) of a phrase, in order; * makes a string's last word a prefix."""
    if phrase.initial:
        raise QueryProblem("^ (a phrase at the start of a column) has no PostgreSQL counterpart")
    words = []
    for piece in phrase.pieces:
        found = list(lexemes.get(piece.text, ()))
        words += [(lexeme, piece.prefix and n == len(found) - 1) for n, lexeme in enumerate(found)]
    return words


def _phrase(words: list[tuple[str, bool]], columns: frozenset[str]) -> str | None:
    """Words in a row within one column: one phrase per column, since the title's last word
    and the text's first are neighbours in the tsvector."""
    if not columns:
        return NOTHING
    if not words:
        return EMPTY
    if len(words) == 1 and columns == COLUMNS:
        return _lexeme(*words[0], "")
    each = [
        " <-> ".join(_lexeme(w, prefix, WEIGHTS[c]) for w, prefix in words)
        for c in _in_order(columns)
    ]
    if len(words) == 1 and len(each) == 1:
        return each[0]
    return "( " + " | ".join(each) + " )"  # <-> binds tighter than |


def _near(near: Near, lexemes: Lexemes) -> str | None:
    """NEAR(a b, N): b at most N words after a ends, or a after b, in one column."""
    phrases = [w for w in (_words(p, lexemes) for p in near.phrases) if w]
    if len(phrases) > 2:
        raise QueryProblem("NEAR() of more than two phrases has no PostgreSQL counterpart")
    if near.distance > MAX_NEAR:
        raise QueryProblem(f"a NEAR() distance over {MAX_NEAR} has no PostgreSQL counterpart")
    if not near.columns or not phrases:
        return NOTHING
    if len(phrases) == 1:
        return _phrase(phrases[0], near.columns)
    alternatives = []
    for column in _in_order(near.columns):
        a, b = (_phrase(words, frozenset({column})) for words in phrases)
        for gap in range(1, near.distance + 2):
            alternatives += [f"{a} <{gap}> {b}", f"{b} <{gap}> {a}"]
    return "( " + " | ".join(alternatives) + " )"


def _in_order(columns: frozenset[str]) -> list[str]:
    return sorted(columns, key=WEIGHTS.__getitem__)


def _lexeme(word: str, prefix: bool, weight: str) -> str:
    quoted = word.replace("\\", "\\\\").replace("'", "''")
    return f"'{quoted}'" + (":" + "*" * prefix + weight if prefix or weight else "")


def marks(node: Node, lexemes: Lexemes, column: str) -> str | None:
    """What ts_headline marks in `column`: every phrase the query looks for there (not
    those after NOT), any of them, as FTS5's highlight() and snippet() mark each phrase
    found in their column. None: nothing to mark there."""
    found = []
    for phrase in _wanted(node):
        words = _words(phrase, lexemes) if column in phrase.columns else []
        if words:  # no weights: ts_headline reads the plain column
            in_a_row = " <-> ".join(_lexeme(w, prefix, "") for w, prefix in words)
            found.append(in_a_row if len(words) == 1 else f"( {in_a_row} )")
    return " | ".join(dict.fromkeys(found)) or None


def _wanted(node: Node) -> Iterable[Phrase]:
    if isinstance(node, Phrase):
        yield node
    elif isinstance(node, Near):
        yield from node.phrases
    elif isinstance(node, Not):
        yield from _wanted(node.keep)
    else:
        for part in node.parts:
            yield from _wanted(part)


# ---------------------------------------------------------------- running it


@dataclass(frozen=True)
class TsQuery:
    """A query ready for PostgreSQL: what items must match, and what to mark in each column."""

    match: str
    title_marks: str | None
    text_marks: str | None


# Each string's lexemes in order (a word's positions in its own tsvector): what
# search_document would make of it in an item.
_LEXEMES = f"""SELECT w.n, t.lexeme
    FROM unnest(CAST(? AS text[])) WITH ORDINALITY AS w(word, n)
    CROSS JOIN LATERAL unnest(to_tsvector('{CONFIG}', search_words(w.word))) AS t(lexeme, positions, weights)
    CROSS JOIN LATERAL unnest(t.positions) AS p(pos)
    ORDER BY w.n, p.pos"""


def query_lexemes(store: Store, words: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each string's lexemes, in one query."""
    distinct = list(dict.fromkeys(words))
    found: dict[str, list[str]] = {w: [] for w in distinct}
    if distinct:
        for n, lexeme in store.conn.execute(_LEXEMES, (distinct,)):
            found[distinct[n - 1]].append(lexeme)
    return {w: tuple(ls) for w, ls in found.items()}


def translate(store: Store, query: str, text: str) -> TsQuery | None:
    """The FTS5 query `query` (made of the user's `text`) for PostgreSQL; None when nothing
    can match (only words without letters or digits, such as "!!!"). A SearchError
    naming the syntax to use when it is not valid or has no PostgreSQL counterpart."""
    try:
        tree = parse(query)
        words = query_lexemes(store, strings(tree))
        match = to_tsquery(tree, words)
        if match is None:
            return None
        return TsQuery(match, marks(tree, words, "title"), marks(tree, words, "text"))
    except QueryProblem as exc:
        raise SearchError(f"cannot search for {text!r}: {exc}; {syntax_hint()}") from None


def ranked(
    store: Store, query: TsQuery, since: datetime | None, limit: int | None, candidates: int | None
) -> list[tuple]:
    """(cluster id, its best score, item id, the item's score) of the newest `candidates`
    matches (None: all; search.search says why), best cluster first and each cluster's
    matches best first. PostgreSQL's planner walks the items newest first for a common
    word and takes the index's list for a rare one."""
    since_sql, since_args = (
        ("AND i.published_at >= ?", [iso(since)]) if since is not None else ("", [])
    )
    # psycopg prepares a statement run 5 times, and PostgreSQL may then plan it once for
    # any query: newest first for every word, 60-100 ms for a rare word in 30k items
    # instead of 1 ms. Planned for each query's words instead (this transaction only).
    store.conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    return store.conn.execute(
        f"""WITH candidates AS MATERIALIZED (
                SELECT s.item_id, s.doc FROM items_search s WHERE s.doc @@ CAST(? AS tsquery)
                ORDER BY s.item_id DESC LIMIT ?),
            hits AS MATERIALIZED (
                SELECT i.cluster_id, i.id,
                       ts_rank_cd(CAST(? AS real[]), c.doc, CAST(? AS tsquery), {RANK_NORMALISATION}) AS score
                FROM candidates c JOIN items i ON i.id = c.item_id
                WHERE i.cluster_id IS NOT NULL {since_sql}),
            top AS (
                SELECT cluster_id, max(score) AS best FROM hits
                GROUP BY cluster_id ORDER BY best DESC, cluster_id LIMIT ?)
            SELECT top.cluster_id, top.best, hits.id, hits.score
            FROM top JOIN hits ON hits.cluster_id = top.cluster_id
            ORDER BY top.best DESC, top.cluster_id, hits.score DESC, hits.id""",
        [query.match, candidates, RANK_WEIGHTS, query.match, *since_args, limit],
    ).fetchall()


def shown(store: Store, query: TsQuery, item_ids: list[int]) -> dict[int, tuple]:
    """Per item: feed, title, url, published, the title marked up, a snippet of the text."""
    rows = store.conn.execute(
        f"""SELECT i.id, coalesce(f.name, f.title, f.url), i.title, i.url, i.published_at,
                   ts_headline('{CONFIG}', i.title, CAST(? AS tsquery), ?),
                   ts_headline('{CONFIG}', i.text, CAST(? AS tsquery), ?), i.text
            FROM items i JOIN feeds f ON f.id = i.feed_id WHERE i.id = ANY(?)""",
        (query.title_marks, TITLE_MARKS, query.text_marks, SNIPPET_MARKS, item_ids),
    )
    return {r[0]: (*r[1:5], r[5] if r[5] is not None else r[2], snippet(r[6], r[7])) for r in rows}


def snippet(fragment: str | None, text: str) -> str:
    """A ts_headline fragment of `text` as FTS5's snippet() shows one: "…" where the text
    goes on, its closing punctuation kept; the text's first words when nothing is marked
    in it (`fragment` None)."""
    if fragment is None:
        words = text.split()
        return " ".join(words[:SNIPPET_WORDS]) + ("…" if len(words) > SNIPPET_WORDS else "")
    plain = fragment.replace(MARK_START, "").replace(MARK_END, "")
    at = text.find(plain)
    if at < 0 or not plain:
        return fragment
    before, after = text[:at], text[at + len(plain) :]
    return (
        ("…" if re.search(r"\w", before) else "")
        + fragment
        + ("…" if re.search(r"\w", after) else after.rstrip())
    )
