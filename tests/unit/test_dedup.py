"""Duplicate decisions on self-written fixtures, without Redis."""
from dataclasses import replace

from worker.core.dedup import DedupInput, DedupOutcome, Evidence, IndexedArticle, decide
from worker.core.fingerprint import fingerprint

STORY = (
    "Firefighters in Ashby spent the night battling a blaze at a disused grain warehouse near the railway "
    "station. Nobody was hurt, the county fire service said, but smoke drifted over the town centre and "
    "residents were told to keep their windows closed. The warehouse had been empty for six years and was due "
    "to be turned into flats. Investigators will return on Thursday to establish how the fire started. "
    "Trains between Ashby and Kelford were halted for three hours while crews worked near the tracks."
)
REWRITE = (
    "Firefighters in Ashby spent all night fighting a blaze at a disused grain warehouse close to the railway "
    "station. No one was hurt, the county fire service said, but smoke drifted across the town centre and "
    "residents were asked to keep their windows shut. The warehouse had stood empty for six years and was "
    "going to be turned into flats. Investigators will go back on Thursday to establish how the fire began. "
    "Trains between Ashby and Kelford were stopped for three hours while crews worked next to the tracks."
)
INDEPENDENT = (
    "A large fire destroyed much of the old grain store in Ashby late on Wednesday. Neighbours described "
    "flames rising above the rooftops. The owner, a property developer, said plans for housing on the site "
    "would now be reviewed. Police have not ruled out arson."
)
FORM = "Your subscription is almost ready. Check your inbox and click the link we sent to confirm it. Close"
T0 = 1_700_000_000.0
WINDOW = 7 * 86400


def item(article_id, text, title="Fire at Ashby grain warehouse", url="https://ashby-news.example/fire", t=T0):
    return DedupInput(article_id, url, title, text, t)


def indexed(inp: DedupInput) -> IndexedArticle:
    fp = fingerprint(inp.canonical_url, inp.title, inp.text)
    return IndexedArticle(inp.article_id, inp.event_time, fp.content_key, fp.level, fp.sketch, fp.title_words,
                          fp.body_supports_title, headline_only=fp.headline_only)


def run(inp: DedupInput, evidence: Evidence, now=T0) -> DedupOutcome:
    return decide(inp, fingerprint(inp.canonical_url, inp.title, inp.text), evidence, now, WINDOW)


ORIGINAL = item("a1", STORY)


def test_stored_outcome_is_returned_unchanged():
    stored = DedupOutcome("a2", "a1", "near_copy", 0.9, None, {"by": "shingles"})
    assert run(item("a2", STORY), Evidence(stored=stored, same_content=indexed(ORIGINAL))) is stored


def test_same_url_same_content_is_exact_url():
    out = run(item("a2", STORY), Evidence(same_url=indexed(ORIGINAL)))
    assert (out.duplicate_of, out.kind, out.similarity) == ("a1", "exact_url", 1.0)


def test_same_url_new_content_is_an_update_not_a_duplicate():
    out = run(item("a2", STORY + " Update: the fire was started deliberately."), Evidence(same_url=indexed(ORIGINAL)))
    assert out.duplicate_of is None and out.update_of == "a1"


def test_a_feed_s_headline_of_a_page_held_in_full_is_a_copy_not_an_update_that_drops_the_body():
    headline = item("a2", None, title=ORIGINAL.title)
    out = run(headline, Evidence(same_url=indexed(ORIGINAL)))
    assert (out.duplicate_of, out.kind, out.update_of) == ("a1", "exact_url", None)
    assert out.matched == {"by": "canonical_url", "headline_only": True}
    body_later = run(ORIGINAL, Evidence(same_url=indexed(headline)))   # the body arriving after its headline
    assert (body_later.duplicate_of, body_later.update_of) == (None, "a2")


def test_a_record_that_does_not_say_whether_it_had_a_body_is_compared_as_before():
    """Written by a worker of an earlier version (a rolling upgrade): a headline-only re-crawl with a corrected
    title is an update of it, as it was then, not a copy."""
    old = replace(indexed(item("h1", None, title="Fire at Ashby warehouse")), headline_only=None)
    out = run(item("h2", None, title="Fire at Ashby grain warehouse, two hurt"), Evidence(same_url=old))
    assert (out.duplicate_of, out.update_of) == (None, "h1")


def test_an_article_quoting_a_headline_only_item_is_not_its_copy():
    """A headline alone is contained in every article that quotes it: a briefing, a "Read more" line."""
    headline = item("h1", None, title="Apple unveils new iPhone with satellite messaging at Cupertino event",
                    url="https://feed.example/h1")
    quoting = item("a2", "Markets opened higher on Tuesday as investors weighed the latest jobs figures and a "
                   "rally in technology shares. Read more: Apple unveils new iPhone with satellite messaging at "
                   "Cupertino event", title="Morning briefing: markets open higher", url="https://brief.example/2")
    assert run(quoting, Evidence(candidates=(indexed(headline),))).duplicate_of is None
    assert run(headline, Evidence(candidates=(indexed(quoting),))).duplicate_of is None
    again = item("h2", None, title=headline.title.upper(), url="https://other-feed.example/h2")
    assert run(again, Evidence(same_content=indexed(headline), candidates=(indexed(headline),))).duplicate_of == "h1"


def test_an_update_after_a_copy_at_the_same_url_replaces_the_version_the_copy_copied():
    """The page sent again (or a feed's headline of it) is the URL's latest record: the page's next version
    replaces the page in its story, not the copy, which holds nothing there to replace."""
    resent = replace(indexed(item("a2", STORY)), duplicate_of="a1", url_version="a1")
    out = run(item("a3", STORY + " Update: two arrests."), Evidence(same_url=resent))
    assert (out.duplicate_of, out.update_of) == (None, "a1")


def test_exact_content_from_another_outlet_points_at_the_root():
    copy_of_copy = IndexedArticle("a3", T0, indexed(ORIGINAL).content_key, duplicate_of="a1")
    out = run(item("a4", STORY, url="https://other.example/x"), Evidence(same_content=copy_of_copy))
    assert (out.duplicate_of, out.kind) == ("a1", "exact_content")


def test_an_article_replayed_without_its_stored_outcome_is_never_a_copy_of_itself():
    """Replayed with another event time (its stored outcome looked up in another generation), an original
    meets the copies of it indexed since: they point at it, not it at itself."""
    copy = replace(indexed(item("a2", STORY)), duplicate_of="a1")
    out = run(ORIGINAL, Evidence(same_url=copy, same_content=copy, candidates=(copy,)))
    assert (out.duplicate_of, out.kind, out.update_of) == (None, None, None)


def test_syndicated_copy_with_furniture_dateline_and_truncation_is_a_near_copy():
    text = "Advertisement\n\nKELFORD (Wire) - " + STORY[: int(len(STORY) * 0.7)] + "\n\nShare this story."
    out = run(item("a2", text, title="Warehouse blaze in Ashby", url="https://wire.example/1?utm_medium=rss"),
              Evidence(candidates=(indexed(ORIGINAL),)))
    assert (out.duplicate_of, out.kind) == ("a1", "near_copy")
    assert out.matched["by"] == "shingles" and 0.72 <= out.similarity <= 1.0


def test_html_entities_and_case_do_not_hide_a_copy():
    text = STORY.replace("Firefighters", "Firefighter&#115;").upper()
    assert "&#115;" in text
    out = run(item("a2", text, url="https://b.example/2"), Evidence(candidates=(indexed(ORIGINAL),)))
    assert out.duplicate_of == "a1"


def test_sentence_by_sentence_rewrite_is_linked():
    out = run(item("a2", REWRITE, url="https://c.example/3"), Evidence(candidates=(indexed(ORIGINAL),)))
    assert out.duplicate_of == "a1" and out.kind in ("rewrite", "near_copy")


def test_independent_report_is_not_a_duplicate():
    out = run(item("a2", INDEPENDENT, url="https://d.example/4"), Evidence(candidates=(indexed(ORIGINAL),)))
    assert out.duplicate_of is None and out.kind is None


WALL = ("Please enable JavaScript and cookies to continue reading. We use cookies to give you the best "
        "experience on our website and to show you relevant advertising.")


def test_an_outlet_s_name_in_its_headlines_does_not_make_two_of_its_walled_pages_related():
    """Two stories whose scraped body is the same cookie wall: unrelated headlines but for "Reuters"."""
    first = item("w1", WALL, title="Oil prices slide - Reuters",
                 url="https://www.reuters.com/markets/oil-1")
    second = item("w2", WALL, title="Airbag recall widens - Reuters",
                  url="https://www.reuters.com/business/autos-2")
    assert run(second, Evidence(same_content=indexed(first), candidates=(indexed(first),))).duplicate_of is None
    copy = item("w3", STORY, title="Fire at Ashby grain warehouse - Reuters", url="https://www.reuters.com/world/3")
    assert run(copy, Evidence(candidates=(indexed(ORIGINAL),))).duplicate_of == "a1"


def test_pages_sharing_only_a_template_are_not_duplicates():
    first = item("p1", FORM, title="Bridge repairs delayed again", url="https://e.example/1")
    second = item("p2", FORM.replace("almost", "nearly"), title="School wins chess trophy", url="https://f.example/2")
    out = run(second, Evidence(same_content=indexed(first), candidates=(indexed(first),)))
    assert out.duplicate_of is None


FOOTER = (
    "This article is provided for general information only and does not constitute legal, financial or medical "
    "advice. The Kelford Courier makes every effort to ensure accuracy but accepts no liability for errors or "
    "omissions. Readers should seek independent professional advice before acting on any information contained "
    "here. Comments are moderated and must comply with our community guidelines; abusive, defamatory or "
    "off-topic posts will be removed without notice. To report a correction, email the newsroom or call during "
    "office hours. Subscribers can manage their newsletter preferences from the account page. Copyright Kelford "
    "Courier Media Group. All rights reserved. No part of this publication may be reproduced, distributed or "
    "transmitted in any form without prior written permission of the publisher, except for brief quotations."
)
BRIEFS = [
    ("Council approves cycle lanes on Harbour Road", "The council approved cycle lanes on Harbour Road on "
     "Tuesday after a heated debate. Councillors voted nine to four for the scheme, which removes forty parking "
     "spaces. Shop owners said the cycle lanes would hurt trade."),
    ("Bakery wins national bread award", "A family bakery in Eastgate has won a national bread award for its "
     "sourdough loaf. The bakery, run by three generations of one family, beat two hundred entries. The owners "
     "will give away award loaves on Saturday."),
]


def test_briefs_sharing_a_long_footer_are_not_duplicates_but_a_retitled_copy_is():
    """The footer is most of each text; the briefs' bodies do not mention each other's headline."""
    (t1, b1), (t2, b2) = BRIEFS
    first = item("c1", b1 + "\n\n" + FOOTER, title=t1, url="https://kelford.example/1")
    second = item("c2", b2 + "\n\n" + FOOTER, title=t2, url="https://kelford.example/2")
    evidence = Evidence(candidates=(indexed(first),))
    assert fingerprint(second.canonical_url, t2, second.text).body_supports_title
    assert run(second, evidence).duplicate_of is None
    retitled = item("c3", "KELFORD (Wire) - " + first.text, title="Parking spaces to go in scheme",
                    url="https://wire.example/3")
    assert run(retitled, evidence).duplicate_of == "c1"


def test_samples_known_as_boilerplate_weigh_nothing():
    fp = fingerprint("https://g.example/1", "Fire", STORY)
    out = run(item("a2", STORY, url="https://g.example/1"),
              Evidence(candidates=(indexed(ORIGINAL),), boilerplate=frozenset(fp.sketch)))
    assert out.duplicate_of is None


def test_entries_outside_the_window_are_ignored():
    old = indexed(item("a1", STORY, t=T0 - 2 * WINDOW))
    out = run(item("a2", STORY, url="https://h.example/1"), Evidence(same_content=old, candidates=(old,)))
    assert out.duplicate_of is None


def test_outcome_is_json_serialisable():
    out = run(item("a2", STORY), Evidence(same_url=indexed(ORIGINAL)))
    assert out.to_dict() == {"article_id": "a2", "duplicate_of": "a1", "kind": "exact_url", "similarity": 1.0,
                             "update_of": None, "matched": {"by": "canonical_url"}}


ZH = "上海市政府周二宣布，从下个月起将在全市范围内推广垃圾分类新规定。根据新规定，居民需要将生活垃圾分为四类，违反规定的个人最高可被罚款两百元。"


def test_a_chinese_copy_under_a_new_headline_is_a_duplicate():
    """Unspaced text read as one word per clause left the headline's words out of every body: the guard against
    template pages then kept a re-headlined copy apart."""
    original = item("zh1", ZH, title="上海推广垃圾分类新规", url="https://a.example/zh1")
    copy = item("zh2", ZH, title="上海将全面实行垃圾分类", url="https://b.example/zh2")
    out = run(copy, Evidence(same_content=indexed(original), candidates=(indexed(original),)))
    assert (out.duplicate_of, out.kind) == ("zh1", "exact_content")
