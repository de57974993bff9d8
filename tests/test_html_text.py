"""HTML -> text with a real HTML parser (aggregator/ingest/html_text.py): right where the
regular expressions it replaced were wrong, the same where they were right, linear on
hostile markup, and safe to call from many threads."""

from __future__ import annotations

import random
import threading
import time

import pytest

from aggregator.ingest.normalize import html_to_text

# (markup, text) pairs the regex cleaner (5187a39) got wrong; its output in the comment.
FIXED = {
    "`>` inside an attribute value": (
        '<p>Rates <a href="/r" title="2% > 1%">rose</a> again.</p>',
        "Rates rose again.",  # was 'Rates 1%">rose again.'
    ),
    "`<` inside an attribute value": (
        '<p><img alt="<b>chart</b>" src="c.png"> Caption</p>',
        "Caption",  # was '<img alt="chart" src="c.png"> Caption'
    ),
    "comment markup inside an attribute": (
        '<p><a title="<!-- not a comment">Link</a> text</p>',
        "Link text",  # was '<a title="' (everything after hidden)
    ),
    "script markup inside an attribute": (
        '<p><a title="<script>">Link</a> text</p>',
        "Link text",  # was '<a title="'
    ),
    "the empty comment <!-->": ("<p>Before<!-->After</p>", "BeforeAfter"),  # was 'Before'
    "a comment closed by --!>": ("<p>One<!-- note --!>Two</p>", "OneTwo"),  # was 'One'
    "a bogus comment <!...>": ("<p>shown</p><!' <a href='x'>", "shown"),  # was "shown\n<!'"
    "a tag left open at the end": ('<p>Hello <a href="/x"', "Hello"),  # was 'Hello <a href="/x"'
    "a tag left open before another": ("a <b c <i>d</i> e", "a d e"),  # was 'a <b c d e'
    "CDATA around markup with `>` in an attribute": (
        '<![CDATA[<p><a title="x > y">Link</a> end</p>]]>',
        "Link end",  # was 'y">Link end'
    ),
    "`]]>` outside any CDATA section": ("<p>x]]>y</p>", "x]]>y"),  # was 'xy'
    "<br/> with `>` in an attribute": (
        'one<br data-x="a>b"/>two',
        "one\ntwo",
    ),  # was 'one\nb"/>two'
    "a tag spread over lines": (
        '<a\nhref="/x"\ntitle="1 > 0"\n>spread</a> over lines',
        "spread over lines",  # was '0"\n>spread over lines'
    ),
    "table cells": (
        "<table><tr><th>Item</th><th>Price</th></tr><tr><td>Tea</td><td>$3</td></tr></table>",
        "Item Price\nTea $3",  # was 'ItemPrice\nTea$3'
    ),
    "`<` that starts no tag": ("<p>if a < b and c > d</p>", "if a < b and c > d"),  # was 'if a d'
    "a self-closed <iframe/>": (
        "safe<iframe src='https://v.example/'/> description",
        "safe description",  # was 'safe' (the rest taken for the iframe's content)
    ),
}


@pytest.mark.parametrize("case", list(FIXED))
def test_markup_regexes_misread(case: str) -> None:
    markup, text = FIXED[case]
    assert html_to_text(markup) == text


# What the regex cleaner already did right, and still must.
SAME = {
    "paragraphs and headings": (
        "<div><h2>Head</h2><p>One <b>bold</b> <a href='x'>link</a>.</p><p>Two</p></div>",
        "Head\nOne bold link.\nTwo",
    ),
    "hidden elements": (
        "<p>a</p><script>alert('<p>x</p>')</script><style>p{}</style><noscript>n</noscript>"
        "<template>t</template><iframe>i</iframe><object>o</object><svg><text>s</text></svg>"
        "<!-- <p>comment</p> --><p>b</p>",
        "a\nb",
    ),
    "an unclosed script hides the rest": ("<p>kept</p><script>var x = 1; <p>gone</p>", "kept"),
    "a document's head": ("<html><head><title>T</title></head><body><p>B</p></body></html>", "B"),
    "<br> in every spelling": ("a<br>b<br/>c<br />d<BR>e</br>f<br\n/>g", "a\nb\nc\nd\ne\nf\ng"),
    "entities, double-escaped too": (
        "<p>Caf&eacute; &amp;amp; AT&amp;T &#8211; &ldquo;hi&rdquo; &lt;b&gt;</p>",
        "Caf\u00e9 & AT&T \u2013 \u201chi\u201d <b>",
    ),
    "entities without markup": ("AT&amp;amp;T &pound;3", "AT&T \u00a33"),
    "spaces folded, blank lines dropped": (
        "  a \t b\u00a0\u00a0c\r\n\r\n\n  d  <br><br>  e \u200b",
        "a b c\nd\ne",
    ),
    "control, bidi and zero-width characters": (
        "<p>a\x00b\x07c\u202ed\u2066e\u200bf\ufeffg</p>",
        "abcdefg",
    ),
    "terminal escape sequences, whole": ("<b>\x1b[31mred\x1b[0m</b> \x1b]0;title\x07x", "red x"),
    "Unicode NFC": ("<p>cafe\u0301</p>", "caf\u00e9"),
    "a CDATA wrapper around markup": ("<![CDATA[<p>one</p><p>two</p>]]>", "one\ntwo"),
}


@pytest.mark.parametrize("case", list(SAME))
def test_what_was_right_stays(case: str) -> None:
    markup, text = SAME[case]
    assert html_to_text(markup) == text


def test_plain_text_keeps_angle_brackets_and_ampersands() -> None:
    assert (
        html_to_text("Using vector<int> & <b> here", is_html=False)
        == "Using vector<int> & <b> here"
    )
    assert html_to_text(None) == html_to_text("") == html_to_text("   ") == ""


def _reference_fold(s: str) -> str:
    """The folding html_to_text did before fold_spaces, for any text."""
    return "\n".join(line for line in (" ".join(raw.split()) for raw in s.split("\n")) if line)


def test_fold_spaces_equals_the_word_split_it_replaces() -> None:
    from aggregator.ingest.html_text import fold_spaces, tidy_text

    rng = random.Random(7)
    alphabet = ["a", "b", " ", " ", "\t", "\n", "\n", "x\u00e9", "\u3000", "\u2003"]
    for _ in range(3_000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert tidy_text(s) == _reference_fold(s.replace("\xa0", " ")), repr(s)
        ascii_only = s.replace("\u3000", " ").replace("\u2003", " ").replace("x\u00e9", "x")
        assert fold_spaces(ascii_only) == _reference_fold(ascii_only), repr(ascii_only)


def test_control_characters_go_in_ascii_and_in_wider_text() -> None:
    from aggregator.ingest.html_text import tidy_text

    for extra in ("", "\u00e9"):
        s = f"a\x01b\x0bc\x0cd\x1fe\x7ff\rg{extra}"
        assert tidy_text(s) == f"abcdef\ng{extra}"


# ---------------------------------------------------------------- hostile markup

CPU_LIMIT = 10.0  # seconds of CPU: the linear code needs well under one, the quadratic minutes


def _cpu(fn):
    started = time.thread_time()
    result = fn()
    return result, time.thread_time() - started


def test_a_tag_with_eighty_thousand_attributes_is_linear() -> None:
    # libxml2 (and lexbor) compare each attribute with all before it: 90 s of CPU for this
    markup = "<p><a " + " ".join(f"a{i}=1" for i in range(80_000)) + ">kept</a> after</p>"
    text, cpu = _cpu(lambda: html_to_text(markup))
    assert text == "kept after"
    assert cpu < CPU_LIMIT, f"{len(markup):,} characters took {cpu:.1f} s of CPU"


def test_a_long_data_uri_image_is_read_as_before() -> None:
    image = '<img src="data:image/png;base64,' + "A" * 20_000 + '" alt="x">'
    assert (
        html_to_text(f"<p>before {image} after</p>" + "<p>more</p>" * 10)
        == "before after" + "\nmore" * 10
    )


def test_nesting_past_libxml2s_limit_keeps_the_text() -> None:
    # libxml2 stops at 2,048 open elements; the text after that point must not be lost
    markup = "<div><span>" * 3_000 + "deep text" + "</span></div>" * 3_000 + "<p>after</p>"
    assert html_to_text(markup) == "deep text\nafter"
    assert html_to_text("<b>" * 5_000 + "bold" + "<script>x</script> end") == "bold end"


def test_a_text_node_past_ten_megabytes_is_kept() -> None:
    words = "word " * 2_200_000  # 11 MB: past libxml2's default text-node limit
    text = html_to_text(f"<p>{words}</p><p>last</p>")
    assert text.endswith("word\nlast") and len(text) == len(words) - 1 + len("\nlast")


def test_many_threads_at_once_give_the_same_text() -> None:
    """One libxml2 parser per thread: the poller parses in a thread pool."""
    docs = [
        f"<p>doc {i} <b>bold</b></p><table><tr><td>{i}</td></tr></table>" * 20 for i in range(300)
    ]
    expected = [html_to_text(d) for d in docs]
    results: dict[int, list[str]] = {}

    def work(n: int) -> None:
        results[n] = [html_to_text(d) for d in docs]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[n] == expected for n in range(6))
