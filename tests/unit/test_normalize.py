from worker.core.normalize import article_id_for, canonical_url, normalize_text, words


def test_canonical_url_drops_tracking_fragment_and_case():
    a = canonical_url("HTTPS://WWW.News.Example.org:443/2026/05/port-strike/?utm_source=rss&b=2&fbclid=x&a=1#top")
    assert a == "https://news.example.org/2026/05/port-strike?a=1&b=2"


def test_canonical_url_keeps_meaningful_query_and_port():
    assert canonical_url("http://example.com:8080/story?id=7&gclid=abc") == "http://example.com:8080/story?id=7"


def test_canonical_url_tolerates_garbage_port():
    assert canonical_url("http://example.com:notaport/x").startswith("http://example.com/")


def test_normalize_text_unifies_quotes_entities_and_whitespace():
    raw = "\u201cNo limits\u201d&nbsp;partnership &amp;amp; more\u2026\r\n\r\n\r\nNext  \u00a0para\u200b"
    assert normalize_text(raw) == '"No limits" partnership & more...\n\nNext para'


def test_normalize_text_absent_is_empty():
    assert normalize_text(None) == "" and normalize_text("") == ""


def test_words_casefold_and_keep_inner_punctuation():
    assert words("Putin's U.S. visit, re-elected") == ["putin's", "u.s", "visit", "re-elected"]


def test_article_id_is_stable_under_tracking_params_and_changes_with_content():
    a = article_id_for("https://x.org/a?utm_medium=email", "Body text")
    assert a == article_id_for("https://x.org/a", "Body  text")
    assert a == article_id_for("https://x.org/a", "BODY text.")
    assert a != article_id_for("https://x.org/a", "Other body")
