"""Generated bad input thrown at the validator: every message is accepted or rejected with a reason, never a crash."""
from __future__ import annotations

import json
import random
import tracemalloc

from hypothesis import HealthCheck, given, settings, strategies as st

from worker.errors import InvalidMessage
from worker.validation import parse_article

from .conftest import SOAK, size

LIMITS = {"max_bytes": 200_000, "max_text_chars": 50_000}
GOOD = {"url": "https://example.org/a", "title": "A title", "source": "s", "published_at": "2026-05-14T10:00:00Z",
        "text": "Body."}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)


def mutate(rng: random.Random) -> bytes:
    """One bad message of a randomly chosen kind (mostly cheap, occasionally huge)."""
    kind = rng.randrange(10)
    if kind == 0:  # invalid UTF-8 / other encodings
        doc = json.dumps({**GOOD, "title": "caf\u00e9 na\u00efve \u00fcber"}, ensure_ascii=False)
        return doc.encode(rng.choice(["latin-1", "utf-16", "cp1252", "utf-32"]))
    if kind == 1:  # truncated JSON
        raw = json.dumps(GOOD).encode()
        return raw[:rng.randrange(len(raw))]
    if kind == 2:  # wrong types
        key = rng.choice(["url", "title", "source", "text", "published_at"])
        return json.dumps({**GOOD, key: rng.choice([[], {}, ["x"], {"a": 1}, True] + ([2.5, 1] if key != "published_at"
                                                                                      else []))}).encode()
    if kind == 3:  # missing required field
        key = rng.choice(["url", "title", "source"])
        return json.dumps({k: v for k, v in GOOD.items() if k != key}).encode()
    if kind == 4:  # deep nesting
        depth = rng.randrange(33, 20_000)
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == 5:  # dates that are not dates (implausible but real dates fall back instead: see test_pipeline; an
        # empty one is a missing date: see test_validation)
        return json.dumps({**GOOD, "published_at": rng.choice(["0000-00-00", "99999-01-01", "2026-13-45",
                                                               "yesterday", "Thu, 45 Foo 2013", "1e400",
                                                               "2026-02-30",
                                                               "Thu, 02 May 99999999999999999999 10:00 GMT"])}).encode()
    if kind == 6:  # control characters and NULs in place of fields
        junk = "".join(chr(rng.randrange(0, 33)) for _ in range(rng.randrange(1, 40)))
        return json.dumps({**GOOD, "url": junk}).encode() if rng.random() < 0.5 else junk.encode()
    if kind == 7:  # enormous bodies
        return json.dumps({**GOOD, "text": "w" * rng.randrange(50_001, 400_000)}).encode()
    if kind == 8:  # not an object
        return json.dumps(rng.choice([[GOOD], "string", 42, None, True])).encode()
    return b"\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))  # random bytes


def check(value: bytes) -> bool:
    """True when rejected with a class and a reason; False when accepted (must then be a real article)."""
    try:
        article = parse_article(value, **LIMITS)
    except InvalidMessage as exc:
        assert exc.error_class in {"not_utf8", "not_json", "invalid", "oversize"} and exc.reason
        return True
    assert article.url and article.source and article.published_at
    return False


def test_mutated_messages_are_rejected_with_a_reason_and_memory_stays_bounded():
    rng = random.Random(20261122)
    count = size(10_000, 100_000)
    tracemalloc.start()  # the peak of this loop alone (a process's peak RSS is often set by earlier tests)
    try:
        rejected = sum(check(mutate(rng)) for _ in range(count))
        grown_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    line = (f"validator fuzz: {count} mutated messages, {rejected} rejected with a class and reason, "
            f"peak traced memory {grown_mb:.0f} MB")
    print(line)
    assert rejected == count, line
    assert grown_mb < 200, line


@settings(max_examples=size(300, 5000), suppress_health_check=[HealthCheck.too_slow], deadline=None,
          derandomize=not SOAK, database=None)  # CI runs the same examples each time; soak draws new ones
@given(st.dictionaries(st.sampled_from(list(GOOD) + ["id", "language", "x"]), json_values, max_size=8))
def test_arbitrary_json_objects_never_crash_the_validator(doc):
    check(json.dumps(doc).encode())


@settings(max_examples=size(300, 5000), deadline=None, derandomize=not SOAK, database=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_validator(raw):
    check(raw)
