"""The digest as a reader sees it: a real daemon over 180 served stories, its digest read
by feedparser (as a feed reader would), its web page filtered, over HTTP/1.1 with gzip."""

from __future__ import annotations

import random
import re
from collections import Counter

import feedparser
import httpx
from test_daemon import Rig, Story, wait_for

WORDS = [f"{a}{b}" for a in ("har", "riv", "bel", "cas", "dun", "ferr", "mal", "ost", "pen", "sal")
         for b in ("bor", "den", "mont", "ley", "ton", "wick", "ford", "mere", "stow", "field")]  # fmt: skip


def text(rng: random.Random, words: int = 120) -> tuple[str, ...]:
    """Four paragraphs of random words: two such texts have nothing to join them."""
    w = [rng.choice(WORDS) for _ in range(words)]
    return tuple(" ".join(w[i : i + words // 4]) + "." for i in range(0, words, words // 4))




def test_shared_stories_lead_the_digest_and_a_reader_sees_the_story(rig: Rig) -> None:
    """180 stories of the same age, 30 of them carried by three outlets: with max_entries
    100 the 30 shared ones lead the digest (not 100 one-outlet stories); each entry carries
    the headline, a lede and its sources with canonical links; entries are dated by the
    story, not by the poll."""
    rng = random.Random(7)
    shared = [(f"Shared story {i}: " + " ".join(rng.sample(WORDS, 5)), text(rng)) for i in range(30)]
    outlets = []
    for o, name in enumerate(("Quay Times", "Riverside Post", "Harbour Gazette")):
        stories = [Story(f"{o}-s{i}", title, body, f"https://{o}.example/s{i}?utm_source=rss&id={i}", 2 + i / 100)
                   for i, (title, body) in enumerate(shared)]  # fmt: skip
        stories += [Story(f"{o}-own{i}", f"{name} report {i}: " + " ".join(rng.sample(WORDS, 5)), text(rng),
                          f"https://{o}.example/own{i}", 2 + i / 100) for i in range(50)]  # fmt: skip
        outlets.append({"url": rig.serve(f"/{o}.xml", name, stories), "tags": [f"tag{o}"]})
    rig.write_config(outlets, interval="1h")
    daemon = rig.start_serving()
    body = wait_for("the digest", lambda: (r := rig.http.get("/digest.atom")).status_code == 200
                    and b"<entry>" in r.content and r.content)  # fmt: skip
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    assert len(parsed.entries) == 100
    titles = [e.title for e in parsed.entries]
    assert [t for t in titles[:30] if t.startswith("Shared story")] == titles[:30]  # all 30 lead
    assert sum(t.startswith("Shared story") for t in titles) == 30

    entry = parsed.entries[0]
    summary = entry.summary
    lede_words = shared[int(re.search(r"Shared story (\d+)", entry.title)[1])][1][0].split()[:10]
    assert " ".join(lede_words) in summary  # the story's own words, not only "Reported by"
    assert "Reported by 3 sources" in summary
    for name in ("Quay Times", "Riverside Post", "Harbour Gazette"):
        assert name in summary
    assert "utm_source" not in body.decode() and "id=" in entry.link  # canonical links
    print("digest entry as a reader sees it:\n", entry.title, "\n", entry.link, "\n", entry.updated, "\n",
          re.sub(r"<[^>]+>", " ", summary)[:600])  # fmt: skip
    # dated by the story: not 100 equal values of the poll's time
    assert Counter(e.updated for e in parsed.entries).most_common(1)[0][1] < 10

    # the page lists the stories in the same order, and its filters look at the database
    page = rig.http.get("/").text
    page_titles = re.findall(r'<h2><span class="badge[^"]*">[^<]*</span><a [^>]*>([^<]*)</a></h2>', page)
    assert page_titles[:30] == [t.replace("&", "&amp;") for t in titles[:30]]
    multi = rig.http.get("/?min_size=2").text
    assert multi.count('<article class="story"') == 30 and "30 stories match" in multi
    assert all(f'<option value="tag{o}"' in page for o in range(3))  # every feed tag on offer
    assert daemon.stop() == 0


def test_served_over_http_1_1_with_gzip_and_an_outlets_two_feeds_are_one_source(rig: Rig) -> None:
    rng = random.Random(3)
    story = Story("p1", "Bridge to close for repairs", text(rng), "https://q.example/bridge")
    atom_like = rig.serve("/q.xml", "Quay Times", [story])
    json_like = rig.serve("/q2.xml", "Quay Times", [story])  # the same posts, a second feed
    rig.write_config([atom_like, json_like])
    daemon = rig.start_serving()
    wait_for("the story", lambda: b"Bridge to close" in rig.http.get("/digest.json").content)
    with httpx.Client(base_url=rig.http.base_url, trust_env=False, http2=False) as client:
        plain = client.get("/digest.atom", headers={"Accept-Encoding": "identity"})
        zipped = client.get("/digest.atom", headers={"Accept-Encoding": "gzip"})
        again = client.get("/digest.atom", headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]})
    assert plain.http_version == zipped.http_version == "HTTP/1.1"
    assert zipped.headers.get("content-encoding") == "gzip" and "content-encoding" not in plain.headers
    assert zipped.content == plain.content  # httpx decodes it
    assert again.status_code == 304
    parsed = feedparser.parse(plain.content)
    (entry,) = parsed.entries
    assert "Reported by 1 source" in entry.summary
    assert entry.summary.count("Quay Times") == 1  # one line, not two identical ones
    assert daemon.stop() == 0
