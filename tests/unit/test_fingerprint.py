"""Fingerprints: exact keys, containment-friendly sampling, headline support."""
import random

import pytest

from tests.fingerprint_reference import choose_anchors, content_text, sample, shingle_hashes, trailing_zeros
from worker.core.fingerprint import (SKETCH_SIZE, fingerprint, fingerprints, overlap, site_name_words,
                                     title_relatedness)
from worker.core.normalize import normalize_text, words

STORY = (
    "The city council of Marlow voted on Tuesday to close the old ferry pier after inspectors found rot in "
    "three of its supporting beams. The mayor, Edith Crane, said the pier would stay shut until a repair plan "
    "was approved and funded. Fishermen who use the pier every morning asked for a temporary landing stage "
    "further down the river. The council promised to discuss the request at its next meeting in June. "
    "Repairs are expected to cost about two hundred thousand pounds, according to the harbour office, and "
    "could take most of the summer. A public footpath along the river bank will remain open during the works."
)
URL = "https://marlow-gazette.example/news/pier-closed"


def test_same_text_same_keys_despite_entities_case_and_spacing():
    a = fingerprint(URL, "Pier closed", STORY)
    messy = STORY.replace("  ", " ").replace("Marlow", "MARLOW").replace("'", "&#39;").replace(". ", ".\n\n  ")
    b = fingerprint(URL + "?utm_source=feed&fbclid=x", "Pier closed", messy)
    assert a.content_key == b.content_key
    assert a.url_key == b.url_key
    assert a.sketch == b.sketch


def test_truncated_copy_is_contained_in_the_original():
    full = fingerprint(URL, "Pier closed", STORY)
    # cut at a word boundary: a cut inside a word changes that word, and so its last shingle
    head = fingerprint("https://other.example/a", "Pier closed", STORY[: len(STORY) // 2].rsplit(" ", 1)[0])
    ov = overlap(head.sketch, head.level, full.sketch, full.level)
    assert ov.containment == 1.0
    assert ov.jaccard < 0.75


def test_boilerplate_head_and_tail_keep_the_original_contained():
    full = fingerprint(URL, "Pier closed", STORY)
    framed = fingerprint("https://wire.example/x", "Pier closed",
                         "UPDATED 9:14 AM\n\nLONDON (Wire) - " + STORY + "\n\nSubscribe to our morning newsletter.")
    ov = overlap(framed.sketch, framed.level, full.sketch, full.level)
    assert ov.containment >= 0.95


def test_independent_report_shares_little():
    other = ("Inspectors have ordered the closure of Marlow's ferry pier. Rotten beams were discovered during a "
             "routine survey last week, a harbour office spokesman told reporters, and the landing will be fenced "
             "off. Local anglers were unhappy and want a temporary stage. Councillors meet again in June.")
    a = fingerprint(URL, "Pier closed", STORY)
    b = fingerprint("https://radio.example/pier", "Ferry pier shut", other)
    ov = overlap(a.sketch, a.level, b.sketch, b.level)
    assert ov.containment < 0.3


def test_a_long_text_is_sampled_at_the_lowest_level_that_keeps_the_sketch_bounded():
    tokens = [f"w{i % 997}x{i % 13}" for i in range(5000)]
    fp = fingerprint(URL, "Long", " ".join(tokens))
    shingles = set(shingle_hashes(tokens))
    assert 0 < len(fp.sketch) <= SKETCH_SIZE and fp.level > 0
    assert set(fp.sketch) == {h for h in shingles if trailing_zeros(h) >= fp.level}  # every sample of its level
    assert sum(trailing_zeros(h) >= fp.level - 1 for h in shingles) > SKETCH_SIZE   # and no lower level fits


def test_headline_only_item_uses_the_title_as_content():
    fp = fingerprint(URL, "Marlow council closes the old ferry pier", "")
    assert fp.sketch
    assert fp.body_supports_title


def test_template_body_does_not_support_its_headline():
    form = "Thank you for registering. Please confirm your email address to activate your account. Close"
    fp = fingerprint(URL, "Marlow council closes the old ferry pier", form)
    assert not fp.body_supports_title
    assert fingerprint(URL, "Marlow council closes ferry pier", STORY).body_supports_title


def test_title_relatedness():
    a = fingerprint(URL, "Marlow council closes ferry pier", STORY).title_words
    b = fingerprint(URL, "Ferry pier closed, says Marlow council", STORY).title_words
    c = fingerprint(URL, "Tennis club elects new chairman", STORY).title_words
    assert title_relatedness(a, b) >= 0.5
    assert title_relatedness(a, c) == 0.0
    assert words("Ferry") == ["ferry"]


def test_vectorised_words_are_the_normalised_words():
    from worker.core.normalize import normalize_text
    samples = [STORY, "", "a", "a.b", "'x'", "--a--b--", "A\u2010B \u01c4 stra\u00dfe \ufb01ne", "x&amp;amp;y",
               "e\u0301t\u00e9", "a\u200bb", "\x00a\x7fb", "\u216b \u00bd \u00b9", "don\u2019t stop\u2014now",
               "a_b c__d", "U.S.-led 'quote' ...", "\u65e5\u672c\u8a9e\u306e \u6f22\u5b57", "\U0001f600 ok",
               "Caf\u00e9 &eacute; &#8217;s `tick`", "line\r\nbreak\tand  spaces", "end.",
               "\u0926\u093f\u0928 \u0926\u093e\u0928", "\u0645\u064f\u062d\u064e\u0645\u064e\u0651\u062f",
               "\u0130stanbul \u0130ZM\u0130R", "\u4e0a\u6d77a\u6f22\u0301-b.c \u30ab\u3099\u30fb\u30fc\u3002x",
               "\U00020000\u3400'\u4e00"]
    for text in samples:
        assert content_text(text) == " ".join(words(normalize_text(text))), text


def test_headline_hash_matches_body_word_hash():
    title = "Ferry pier closed, says Marlow council"
    fp = fingerprint(URL, title, "The council of Marlow says the ferry pier is closed.")
    assert fp.body_supports_title
    assert len(fp.title_words) == 6     # ferry pier closed says marlow council


def test_batch_fingerprints_are_those_of_each_article_alone():
    odd = ["", "a", "two words", "a.b c", "don\u2019t stop\u2014now", "\u65e5\u672c\u8a9e\u306e \u6f22\u5b57",
           "\u0926\u093f\u0928 \u0915\u0940 \u0916\u092c\u0930", "\u4e0a\u6d77a\u6f22\u0301-b \u30ab\u3099",
           "x&amp;amp;y", "Caf\u00e9 &eacute; `tick`", "U.S.-led 'quote' ..."]
    articles = [(URL, "Ferry pier closed, says Marlow council", STORY), (URL + "?utm_source=x", "", STORY[:90]),
                ("https://b.example/2", "Marlow council", "")]
    articles += [(f"https://o.example/{i}", title, text)
                 for i, text in enumerate(odd) for title in ("", "Caf\u00e9 news")]
    articles += [(URL, "Ferry", " ".join([STORY] * 12))]          # long: sampled at a higher level
    articles[3:3] = [("https://www.kctv5.com/1", "Ferry pier closed in Marlow - KCTV5", STORY),   # outlets' names
                     ("https://www.wral.com/2", "Pier shut after rot found :: WRAL.com", STORY[:200]),
                     ("https://dailygazette.com/3", "Marlow pier | Daily Gazette", "")]
    single = [fingerprint(*a) for a in articles]
    assert [len(fp.title_words) for fp in single[3:6]] == [4, 4, 2]   # the outlets left out
    assert fingerprints(articles) == single
    assert fingerprints(articles[:5]) == single[:5]                 # ASCII-only batch
    assert fingerprints([]) == []
    for (_, title, text), fp in zip(articles, single):       # the per-article reference steps agree
        tokens = words(normalize_text(text)) or words(normalize_text(title))
        assert (fp.level, fp.sketch) == (sample(shingle_hashes(tokens)) if tokens else (0, ()))
        assert fp.anchors == (choose_anchors(fp.sketch) if fp.sketch else ())


def test_a_batch_is_fingerprinted_in_runs_of_bounded_size_with_the_same_results(monkeypatch):
    """128 bodies of 200k characters would otherwise need ~1 GB of working arrays and keep the power tables."""
    from worker.core import fingerprint as module

    monkeypatch.setattr(module, "_RUN_CHARS", 400)
    monkeypatch.setattr(module, "_powers", module._powers[:1])
    monkeypatch.setattr(module, "_inverse_powers", module._inverse_powers[:1])
    articles = [(f"https://r.example/{i}", f"Title {i}", (STORY + " ") * (i % 4)) for i in range(12)]
    articles.append(("https://r.example/long", "Long", STORY * 5))   # longer than a run: goes alone
    single = [fingerprint(*a) for a in articles]
    assert fingerprints(articles) == single
    assert len(module._powers) <= 2 * len(STORY * 5)

def test_copies_share_two_anchors_of_the_original_among_their_probe_samples():
    """Only probe samples are looked up: a copy (truncated, with a wire head and a site tail, lightly edited,
    up to about twice the original's length) must keep two of the original's anchors among them."""
    rng = random.Random(5)
    vocab = sorted({w for w in words(normalize_text(STORY)) if len(w) > 2}) + [f"word{i}" for i in range(400)]
    misses, cases = [], 0
    for _ in range(120):
        body = " ".join(rng.choice(vocab) for _ in range(rng.randint(40, 600)))
        tokens = body.split()
        tail = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, len(tokens) // 2)))
        edited = list(tokens)
        for j in rng.sample(range(len(edited)), max(1, len(edited) // 40)):
            edited[j] = rng.choice(vocab)
        copies = [" ".join(tokens[:int(len(tokens) * rng.uniform(0.5, 0.95))]),
                  "LONDON (Wire) - " + body + " " + tail, " ".join(edited)]
        anchors = set(fingerprint(URL, "", body).anchors)
        for copy in copies:
            cases += 1
            shared = anchors & fingerprint("https://copy.example/1", "", copy).probes
            if len(shared) < 2:
                misses.append((len(tokens), copy[:40]))
    assert not misses, f"{len(misses)} of {cases} copies: {misses[:3]}"


def test_probes_are_the_head_and_the_samples_above_the_level():
    fp = fingerprint(URL, "Pier closed", STORY * 3 + " The end of the report, with a few more words.")
    assert fp.level > 0
    assert fp.probes | set(fp.others) == set(fp.sketch) and not fp.probes & set(fp.others)
    assert set(fp.sketch[:6]) <= fp.probes
    assert all(trailing_zeros(s) > fp.level for s in fp.probes - set(fp.sketch[:6]))
    assert all(trailing_zeros(s) == fp.level for s in fp.others)


def test_words_keep_their_combining_marks_and_unspaced_scripts_are_read_a_character_at_a_time():
    from worker.core.normalize import normalize_text

    assert words(normalize_text("दिन दान")) == ["दिन", "दान"]
    assert words("\u0130stanbul") == words("Istanbul") == ["istanbul"]
    assert words("上海推广") == ["上", "海", "推", "广"]
    day = fingerprint(URL, "", "सरकार ने दिन की घोषणा की")
    gift = fingerprint(URL, "", "सरकार ने दान की घोषणा की")
    assert day.content_key != gift.content_key  # "day" and "donation" differ in a vowel sign only


@pytest.mark.parametrize("title, url, expected", [
    ("Bonfire erupts at banquet hall, 5 injured - KCTV5", "http://www.kctv5.com/story/1", 1),
    ("Man charged in shooting at Smithfield sports bar :: WRAL.com", "http://www.wral.com/news/2", 1),
    ("Oil slides on China worries | Daily Gazette", "https://dailygazette.com/3", 2),
    ("Gary shootout leaves 2 dead, several wounded : Gary News", "http://www.nwitimes.com/4", 0),  # not the host
    ("Fire in Harbin - three dead", "https://news.example.com/5", 0),
    ("Storm hits coast - the full story from our reporters on the scene today", "https://coast.example/6", 0),
    ("Royals - Tigers game postponed - KCTV5", "http://www.kctv5.com/7", 1),          # the last segment only
    ("Stocks - New rally lifts Wall St", "http://www.wral.com/8", 0),                  # "newrally" is no name
    ("Climate summit - It is time to act", "https://time.com/9", 0),                  # not its first words
    ("Poll - Reuters survey shows Clinton lead", "https://www.reuters.com/10", 0),    # more than three words
    ("Weather - Kansas", "https://www.kansascity.com/11", 0),                         # a part of the name
    ("Climate summit - Time to act", "https://time.com/12", 0),                       # a name, then more words
    ("Flint shooting suspect named - WNEM TV 5", "http://www.wnem.com/13", 3),        # a name, then "TV 5"
    ("Fire at the depot - Reuters", "https://news\uff3b1.example/14", 0),             # a host urlsplit rejects
    ("Oil slides - Reuters UK", "https://uk.reuters.com/15", 2),                      # another label of the host
    ("Stocks rally - Yahoo Finance", "https://finance.yahoo.com/16", 2),
    ("Storm warning - WNEM TV5", "http://www.wnem.com/17", 2),
    ("Border talks - Fox News Channel", "https://www.foxnews.com/18", 3),
])
def test_an_outlet_s_name_after_a_headline_is_found_by_its_host(title, url, expected):
    assert site_name_words(title, url) == expected
    with_name, without = fingerprint(url, title, STORY), fingerprint(url, title.rsplit(" ", expected)[0], STORY)
    if expected:
        assert with_name.title_words == without.title_words
