"""Pure cleaning rules: text, boilerplate, canonical URLs, item keys and dates."""

import json
import re
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from aggregator.ingest.normalize import (
    _CUTS,
    _DROPS,
    _TAILS,
    BOILERPLATE_RULES,
    RULE_TRIGGERS,
    TRACKING_PARAMS,
    TRACKING_PREFIXES,
    _kept_parameters,
    _line_start_only,
    _triggers_in,
    canonical_url,
    casefolded_utf8,
    html_to_text,
    normalize_entries,
    normalize_entry,
    plausible_date,
    strip_boilerplate,
)
from aggregator.ingest.parse import parse_feed
from aggregator.records import RawEntry

NOW = datetime(2024, 3, 13, 12, 0, tzinfo=UTC)


def entry(**kw) -> RawEntry:
    base = dict(guid=None, link=None, title="A title", content="Some text", author=None,
                published=None, updated=None)  # fmt: skip
    base.update(kw)
    return RawEntry(**base)


# ---------------------------------------------------------------- text


def test_html_stripped_and_scripts_dropped() -> None:
    html = (
        "<div><h2>Head</h2><p>One <b>bold</b> <a href='x'>link</a>.</p>"
        "<script>alert('x')</script><style>p{}</style><!-- note --><p>Two</p></div>"
    )
    assert html_to_text(html) == "Head\nOne bold link.\nTwo"


def test_entities_decoded_including_double_escaped() -> None:
    assert (
        html_to_text("Caf&eacute; &amp; bar &#8211; &ldquo;hi&rdquo;")
        == "Caf\u00e9 & bar \u2013 \u201chi\u201d"
    )
    assert html_to_text("AT&amp;amp;T") == "AT&T"
    assert html_to_text("<p>rents &lt; &pound;30</p>") == "rents < \u00a330"


def test_unicode_nfc() -> None:
    decomposed = "cafe\u0301"
    assert unicodedata.is_normalized("NFD", decomposed)
    assert html_to_text(decomposed) == "caf\u00e9"


def test_whitespace_folded() -> None:
    text = html_to_text("  a \t b\u00a0\u00a0c\r\n\r\n\n  d  <br><br>  e \u200b")
    assert text == "a b c\nd\ne"


def test_empty_markup() -> None:
    assert html_to_text(None) == ""
    assert html_to_text("") == ""


# ---------------------------------------------------------------- boilerplate

# Examples of the boilerplate rules: (text, expected after stripping). Every rule in
# BOILERPLATE_RULES must match at least one example's text (checked below), so a new rule
# without an example fails here.
BOILERPLATE_EXAMPLES = [
    ("Story body.\nLeave a Reply\nCancel reply\nName *", "Story body."),
    ("Story body.\n12 comments\nJo said: great", "Story body."),
    ("Story body. Your email address will not be published. Required fields", "Story body."),
    ("Story body.\nThe post Foo appeared first on Example News.", "Story body."),
    ("Story body goes on. Continue reading \u2192", "Story body goes on."),
    ("Story body goes on [\u2026]", "Story body goes on"),
    (
        "Story body.\nShare this: Facebook | Twitter | Email\nSecond paragraph.",
        "Story body.\nSecond paragraph.",
    ),
    ("Story body.\nSign up for our daily newsletter here.\nMore.", "Story body.\nMore."),
    ("Story body.\nRelated stories:\nMore.", "Story body.\nMore."),
    ("Story body.\nGet email notifications on Jo Smith daily!\nMore.", "Story body.\nMore."),
    ("Story body.\nRead the complete story with a subscription.\nMore.", "Story body."),
    ("Story body.\nSubscription required\nMore.", "Story body.\nMore."),
    ("Story body.\nAdvertisement\nMore.", "Story body.\nMore."),
    ("Please enable JavaScript to watch this video.\nStory body.", "Story body."),
    ("By Jo Smith\nStory body.", "Story body."),
    ("Story body.\n2:45 Watch: the mayor speaks\nMore.", "Story body.\nMore."),
    ("Story body.\n\u00a9 2024 Example News. All rights reserved.", "Story body."),
]


@pytest.mark.parametrize(
    "rule", BOILERPLATE_RULES, ids=[f"{i}-{r[0]}" for i, r in enumerate(BOILERPLATE_RULES)]
)
def test_every_rule_has_an_example(rule: tuple[str, str, str]) -> None:
    name, pattern, _ = rule
    compiled = re.compile(pattern, re.IGNORECASE)
    assert any(compiled.search(text) for text, _ in BOILERPLATE_EXAMPLES), (
        f"add an example for the {name!r} rule to BOILERPLATE_EXAMPLES"
    )


@pytest.mark.parametrize(("text", "expected"), BOILERPLATE_EXAMPLES)
def test_boilerplate_example(text: str, expected: str) -> None:
    assert strip_boilerplate(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Read more about it in the report.\nSecond paragraph.",
        "We share this view.\nTweet of the day is here.",
        "The newsletter was late.",
        "It cost 3 comments' worth of effort.",
    ],
)
def test_boilerplate_leaves_ordinary_prose(text: str) -> None:
    assert strip_boilerplate(text) == text


def test_read_more_behind_truncation_marker() -> None:
    assert strip_boilerplate("The story starts here [...] Read more") == "The story starts here"


def test_wordpress_footer_in_fixture(data_dir: Path) -> None:
    raw = parse_feed((data_dir / "rss20.xml").read_bytes(), {})
    foo = normalize_entry(raw.entries[2], NOW)
    assert foo.title == "Foo"
    assert foo.text.endswith("\u201cWe\u2019ve waited ten years for the right spot.\u201d")
    for junk in ("Leave a Reply", "email address", "appeared first"):
        assert junk not in foo.text


# ---------------------------------------------------------------- URLs


def test_canonical_url_drops_tracking_and_fragment() -> None:
    url = (
        "HTTPS://News.Example.COM:443/a/B?utm_source=x&utm_medium=rss&id=7"
        "&fbclid=1&gclid=2&mc_cid=3&b=2#frag"
    )
    assert canonical_url(url) == "https://news.example.com/a/B?b=2&id=7"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://Example.com:8080", "http://example.com:8080/"),
        ("http://example.com:80/x", "http://example.com/x"),
        ("https://example.com/?q=a+b&page=2", "https://example.com/?page=2&q=a+b"),
        ("  https://ex.com/a?UTM_Source=1 ", "https://ex.com/a"),
        ("https://ex.com/a?keep=1#section", "https://ex.com/a?keep=1"),
        ("mailto:x@example.com", "mailto:x@example.com"),
        (None, None),
        ("", None),
    ],
)
def test_canonical_url_cases(url: str | None, expected: str | None) -> None:
    assert canonical_url(url) == expected


# ---------------------------------------------------------------- keys


def test_key_prefers_guid() -> None:
    item = normalize_entry(entry(guid=" urn:x:1 ", link="https://ex.com/a?utm_source=z"), NOW)
    assert item.key == "urn:x:1"
    assert item.url == "https://ex.com/a?utm_source=z"
    assert item.canonical_url == "https://ex.com/a"


def test_key_falls_back_to_canonical_link() -> None:
    a = normalize_entry(entry(link="https://Ex.com/a?utm_source=z#c"), NOW)
    b = normalize_entry(entry(link="https://ex.com/a?fbclid=9"), NOW)
    assert a.key == b.key == "https://ex.com/a"


def test_key_falls_back_to_hash_and_is_stable() -> None:
    raw = entry(title="No id", content="<p>Body</p>", published=datetime(2024, 3, 1, tzinfo=UTC))
    first = normalize_entry(raw, NOW)
    second = normalize_entry(raw, NOW + timedelta(hours=5))  # a later fetch
    assert first.key.startswith("hash:")
    assert first.key == second.key
    assert normalize_entry(replace(raw, title="Other"), NOW).key != first.key


def test_hash_key_without_date_is_stable_across_fetches() -> None:
    raw = entry(title="Undated", content="Body")
    assert normalize_entry(raw, NOW).key == normalize_entry(raw, NOW + timedelta(days=1)).key


def test_keys_of_fixture_without_guids_are_stable(data_dir: Path) -> None:
    raw = parse_feed((data_dir / "no_guid.xml").read_bytes(), {})
    first = normalize_entries(raw.entries, NOW)
    again = normalize_entries(parse_feed((data_dir / "no_guid.xml").read_bytes(), {}).entries,
                              NOW + timedelta(hours=1))  # fmt: skip
    assert [i.key for i in first] == [i.key for i in again]
    assert len({i.key for i in first}) == 4
    assert first[0].key == "https://parish.example.org/news/roof-appeal"
    assert first[1].key.startswith("hash:")  # no guid, no link
    assert first[3].title == ""  # no title: kept, it has text


def test_entries_without_title_or_text_are_dropped_and_repeats_collapse() -> None:
    items = normalize_entries(
        [entry(guid="1", title="First"), entry(guid="1", title="Second"),
         entry(guid="2", title="", content="  ")],
        NOW,
    )  # fmt: skip
    assert [(i.key, i.title) for i in items] == [("1", "First")]


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    "bad",
    [datetime(1970, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC), NOW + timedelta(days=3)],
)
def test_implausible_dates_fall_back_to_first_seen(bad: datetime) -> None:
    assert plausible_date(bad, NOW) is None
    item = normalize_entry(entry(guid="g", published=bad), NOW)
    assert item.published == NOW


def test_plausible_dates_are_kept_in_utc() -> None:
    from datetime import timezone

    local = datetime(2024, 3, 10, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert plausible_date(local, NOW) == datetime(2024, 3, 10, 11, 0, tzinfo=UTC)
    assert plausible_date(datetime(2024, 3, 10), NOW) == datetime(2024, 3, 10, tzinfo=UTC)
    assert plausible_date(NOW + timedelta(days=1), NOW) == NOW + timedelta(days=1)


def test_bad_published_uses_updated() -> None:
    upd = datetime(2024, 3, 1, tzinfo=UTC)
    item = normalize_entry(entry(published=datetime(1970, 1, 1, tzinfo=UTC), updated=upd), NOW)
    assert item.published == upd


# ---------------------------------------------------------------- plain text fields


def test_json_feed_plain_text_keeps_angle_brackets() -> None:
    # BUG (aggregator/ingest/normalize.py html_to_text + parse.py): JSON Feed `title` and
    # `content_text` are plain text by spec, but every field is run through the HTML tag
    # stripper, so "vector<int>" loses "<int>" and "a < b and c > d" loses "< b and c >".
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "t",
        "items": [{"id": "1", "title": "Using vector<int> in C++",
                   "content_text": "If a < b and c > d then swap."}],
    }  # fmt: skip
    raw = parse_feed(json.dumps(doc).encode(), {"content-type": "application/feed+json"})
    (item,) = normalize_entries(raw.entries, NOW)
    assert item.title == "Using vector<int> in C++"
    assert item.text == "If a < b and c > d then swap."


def test_atom_text_construct_keeps_angle_brackets() -> None:
    # Same bug for Atom type="text", which is explicitly not markup.
    body = (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        b'<entry><id>a1</id><title type="text">Using vector&lt;int&gt; in C++</title>'
        b'<content type="text">If a &lt; b and c &gt; d then swap.</content></entry></feed>'
    )
    (item,) = normalize_entries(parse_feed(body, {}).entries, NOW)
    assert item.title == "Using vector<int> in C++"
    assert item.text == "If a < b and c > d then swap."


def test_wordpress_excerpt_loses_both_truncation_markers() -> None:
    # the author's own "..." and the " […]" WordPress adds behind it
    text = html_to_text("<p>The council voted to close the bridge over the summer... [&hellip;]</p>")
    assert strip_boilerplate(text) == "The council voted to close the bridge over the summer"


def test_a_removal_that_brings_a_byline_to_the_line_start_drops_it_too() -> None:
    # line rules run line by line; a line changed by one rule is looked at afresh by the next
    text = "Posted by Ann\nPlease enable JavaScript to watch this video.By John Smith\nThe story."
    assert strip_boilerplate(text) == "The story."


def test_a_removal_that_makes_a_rules_word_runs_that_rule_on_the_line() -> None:
    # "copyright" is only in the text once the player notice is cut out of it; the rule
    # runs because "©" is in the text, and on that line because the line was changed
    text = "Story.\ncopyPlease enable JavaScript to watch this video.right Example News\n© Example"
    assert strip_boilerplate(text) == "Story."


def test_line_start_rules_agree_with_a_search_of_the_line() -> None:
    # a rule anchored at the line start runs with `match`, which must find what `search` finds
    anchored = [p for _, p, at_start in _CUTS + _DROPS + _TAILS if at_start]
    assert len(anchored) >= 10
    lines = [line for text, _ in BOILERPLATE_EXAMPLES for line in text.split("\n")]
    lines += [f"{pad}{line}" for line in lines for pad in (" ", "\t ", "x ")]
    for pattern in anchored:
        for line in lines:
            found, matched = pattern.search(line), pattern.match(line)
            assert (found and found.span()) == (matched and matched.span()), (pattern.pattern, line)
    assert sum(bool(p.match(line)) for p in anchored for line in lines) >= len(BOILERPLATE_EXAMPLES)


@pytest.mark.parametrize(
    ("pattern", "at_start"),
    [
        (r"(?m)^[ \t]*(a|b)c", True),
        (r"(?m)^a|b", False),  # "b" anywhere
        (r"(?m)^[|]a", True),
        (r"(?m)^[]|]a", True),
        (r"(?m)^[^]|]a", True),
        (r"(?m)^[\]|]a", True),
        (r"(?m)^[\]]|a", False),
        (r"(?m)^\|a", True),
        (r"^a", False),  # without (?m): the text's start, not a line's
    ],
)
def test_which_patterns_match_only_at_a_line_start(pattern: str, at_start: bool) -> None:
    assert _line_start_only(re.compile(pattern)) is at_start


@pytest.mark.parametrize(
    "query",
    ["", "a=1", "b=2&a=1&a=0", "a", "a=", "=x", "&&a=1&", "a=1=2", "q=a+b%20c&utm_source=x",
     "UTM_Medium=rss&Fbclid=1&x=%C3%A9%zz", "k%3D1=v&k+2=%2B", "a=1;b=2", "ref=%FF", "pk_campaign"],
)  # fmt: skip
def test_kept_parameters_read_the_query_as_parse_qsl_does(query: str) -> None:
    expected = sorted(
        (k, v)
        for k, v in parse_qsl(query, keep_blank_values=True)
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(TRACKING_PREFIXES)
    )
    assert _kept_parameters(query) == expected


@pytest.mark.parametrize(
    "text",
    ["", "plain ASCII Text", "\u201cQuoted\u201d \u2014 dashes \u2026", "Stra\u00dfe", "\u0130stanbul",
     "\u212a\u017f \ufb01", "\u039f\u0394\u039f\u03a3", "Caf\u00e9 \u00c9t\u00e9", "\u00b5 \u13a0", "\u00e9\u00df"],
)  # fmt: skip
def test_casefolded_utf8_is_the_casefold_encoded(text: str) -> None:
    assert casefolded_utf8(text) == text.casefold().encode()


def test_no_character_folds_to_itself_followed_by_more() -> None:
    # what casefolded_utf8 relies on: a string equal to its folding has only fixed points
    assert not [c for c in map(chr, range(0x110000)) if c.casefold() != c and c.casefold()[0] == c]


def test_trigger_words_found_in_one_pass_are_those_a_substring_test_finds() -> None:
    texts = [text.lower() for text, _ in BOILERPLATE_EXAMPLES] + [
        "share this: email | print\nby jo\n\u00a9 2024 copyright",
        "read more from the newsletter: loading\u2026 related trending see also",
        "\nposted by\nwritten by\nstory by jo",
        "continue reading\u2014keep reading\u2014read the rest",  # overlapping and nested words
        "emailaddress email address commentpost a comment",
        "",
    ]
    for lower in texts:
        assert _triggers_in(lower) == {w for w in (w for words in RULE_TRIGGERS.values() for w in words) if w in "\n" + lower}, lower
