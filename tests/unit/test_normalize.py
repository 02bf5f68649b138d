import pytest

from worker.core.normalize import article_id_for, canonical_url, normalize_text, words


def test_canonical_url_drops_tracking_fragment_and_case():
    a = canonical_url("HTTPS://WWW.News.Example.org:443/2026/05/port-strike/?utm_source=rss&b=2&fbclid=x&a=1#top")
    assert a == "https://news.example.org/2026/05/port-strike?a=1&b=2"


def test_canonical_url_keeps_meaningful_query_and_port():
    assert canonical_url("http://example.com:8080/story?id=7&gclid=abc") == "https://example.com:8080/story?id=7"


def test_canonical_url_tolerates_garbage_port():
    assert canonical_url("http://example.com:notaport/x").startswith("https://example.com/")


@pytest.mark.parametrize("one, other, same", [
    ("http://a.example/x?id=5&amp;ref=rss", "https://a.example/x?id=5", True),      # HTML escape, tracking
    ("http://b\u00fccher.example/a", "https://xn--bcher-kva.example/a", True),      # IDN
    ("https://a.example/caf\u00e9", "https://a.example/caf%c3%a9", True),           # one escape form
    ("http://a.example:80/x", "https://a.example/x", True),                        # scheme, default port
    ("https://a.example/#!/story/1", "https://a.example/#!/story/2", False),       # hash-bang routes
    ("https://a.example/x?q=%E9", "https://a.example/x?q=%E8", False),             # invalid UTF-8 bytes
    ("https://a.example/a%2Fb", "https://a.example/a/b", False),                   # an escaped slash
    ("http://[2001:db8::1]:8080/x", "http://[2001:db8::1]:8081/x", False),         # IPv6 ports
])
def test_canonical_url_gives_one_spelling_per_document_and_keeps_documents_apart(one, other, same):
    assert (canonical_url(one) == canonical_url(other)) is same


def test_canonical_url_keeps_the_brackets_of_an_ipv6_host():
    assert canonical_url("http://[2001:db8::1]:8080/x") == "https://[2001:db8::1]:8080/x"


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
    # a body without words is no body: a headline-only item is told apart by its title
    assert article_id_for("https://x.org/a", " ", "Quake hits") != article_id_for("https://x.org/a", " ", "Fire")
    assert article_id_for("https://x.org/a", "— …", "Quake hits") == article_id_for("https://x.org/a", None,
                                                                                   "QUAKE hits.")
    assert article_id_for("https://x.org/a", "Body text", "Any title") == a


def test_bidirectional_marks_are_invisible_to_normalisation():
    assert normalize_text("\u202bשלום\u202c \u200fworld\u200e \u2067x\u2069") == "שלום world x"


def test_international_hosts_are_encoded_by_idna_2008():
    """IDNA 2003 maps "ß" to "ss" and final sigma to sigma: two registered domains would be one."""
    assert canonical_url("https://faß.example/a") != canonical_url("https://fass.example/a")
    assert canonical_url("https://faß.example/a") == "https://xn--fa-hia.example/a"
    assert canonical_url("https://ς.example/a") != canonical_url("https://σ.example/a")
    assert canonical_url("https://☃.example/a") == "https://xn--n3h.example/a"  # refused by IDNA 2008: 2003
