"""Online story clustering, the pure part: article features, similarity to a story, story state merge.

An article joins the most similar active story when the similarity clears a threshold, else it starts one.
Similarity mixes signals that generalise across news:

- who/where: named entities weighted by salience and by rarity among the articles seen so far (cosine with the
  story's entity mass); a bare headline, where NER misses names, also counts the story's entities it spells out;
- what happened: TF-IDF cosine of the words against the story's word mass, and the cosine of the lead's
  sentence embedding (worker.core.embedding) with the story's nearest kept member or mean, both centred on the
  running mean embedding of the stream (so "every shooting looks alike" does not count), counted above a floor;
- when: distance in event time to the nearest article of the story, less so for a report that names the story's
  people (a trial or a plea months later names the accused; a shared city does not), and the years the title
  and lead name (a lead year that no report of the story names costs `year_penalty`);
- specifics: counts attached to the same word in title and lead ("3 dead", "16-year-old"); an article whose
  counts all differ from the story's costs `number_penalty` (a sibling event, not a follow-up).

No I/O here: document frequencies, the running mean embedding and story states are passed in, so the Redis
adapter and tests drive the same code. Story state keeps the embeddings as int8 (384 bytes each: the mean and
up to `embed_members_kept` members).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from worker.core.embedding import dequantize, quantize, unpack
from worker.core.entities import NUMERIC_LABELS, Entity
from worker.core.normalize import is_solo, normalize_text, words

DAY = 86_400.0
_YEAR = re.compile(r"\b(1[89]\d\d|2[01]\d\d)\b")

# How much each entity type says about *which* event an article reports.
_TYPE_WEIGHT = {"PERSON": 1.0, "GPE": 1.0, "LOC": 1.0, "FAC": 1.0, "ORG": 0.8, "EVENT": 0.8, "PRODUCT": 0.6,
                "WORK_OF_ART": 0.6, "LAW": 0.6, "NORP": 0.3, "LANGUAGE": 0.2}
_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here
hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves said says say told according new
one two three four five six seven eight nine ten first last year years day days week weeks month months time
monday tuesday wednesday thursday friday saturday sunday today yesterday tonight morning night afternoon evening
mr mrs ms us get got like people news report reports reported update updated http https www com html index
""".split())


@dataclass(frozen=True)
class ClusterConfig:
    """One setting for every data set; the weights were chosen on the development sets (see bench/ and notes)."""
    entity_weight: float = 0.5
    text_weight: float = 0.5
    time_scale_days: float = 10.0      # half of the time penalty is reached this many days past the grace
    time_weight: float = 0.4           # how much a far-apart date can pull the score down
    time_grace_days: float = 1.0       # reports of one event within a day of each other are not apart
    # The time penalty shrinks by the share of the article's entity weight on PERSONs the story names too.
    people_bridge_time: bool = True
    threshold: float = 0.07
    max_index_keys: int = 12           # index keys an article is filed and looked up under
    index_title_terms: int = 4         # of which title words, at least (when the title has them)
    max_candidates: int = 24           # stories scored per article
    # A join re-files the story under the joining article's keys and the keys most of its reports have (so the
    # cost of a join does not grow with the size of the story; a story keeps counts for 4x as many keys).
    story_keys_filed: int = 32
    story_entities_kept: int = 64
    story_terms_kept: int = 200
    story_times_kept: int = 16
    story_sources_kept: int = 64
    title_boost: float = 2.0
    # "What happened": cosine of the lead's sentence embedding (worker.core.embedding) with the story, counted
    # above a floor (unrelated news sits at 0.0-0.2, one topic type at ~0.5) and rescaled to 0..1.
    embed_weight: float = 0.5
    embed_floor: float = 0.4
    embed_members_kept: int = 8        # member vectors kept for the nearest-member cosine (first + latest)
    embed_mode: str = "max"            # "centroid" | "max" (nearest of centroid and kept members)
    embed_center: bool = True          # take the running mean embedding out before cosines
    # "When", as the text states it: the year of the dates in the title and lead (a dateline, "on May 2, 2013").
    # An article whose lead year no report of the story shares is about another event of the same kind.
    year_penalty: float = 0.4
    lead_chars: int = 300
    # "What happened", in numbers: counts the title and lead attach to the same word ("23 pirates", "5.6
    # magnitude", "16-year-old"). Reports naming different counts of the same thing, and none alike, differ.
    number_penalty: float = 0.2
    # "Who", for a bare headline (no body): NER misses names in Title-Case headlines ("Titanfall" in 72 of the
    # 157 UCI headlines naming it), so such an article also counts the candidate story's established entities
    # (named by two of its reports or more) that it spells out.
    headline_names: bool = True


@dataclass(frozen=True)
class ClusterInput:
    article_id: str
    title: str
    text: str
    source: str
    url: str
    event_time: float  # epoch seconds (event time = published_at)
    entities: Sequence[Entity]
    language: str | None
    embedding: Sequence[float] | None = None  # unit vector of the lead (worker.core.embedding); None: unused


@dataclass(frozen=True)
class StoryChange:
    story_id: str
    version: int
    action: str  # "created" | "article_added" | "duplicate_seen" | "article_updated" | "story_closed"
    article_id: str | None
    score: float | None
    runner_up: dict | None
    shared_entities: list[str]
    story: dict

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "StoryChange":
        return cls(**data)


@dataclass(frozen=True)
class ArticleFeatures:
    """What clustering looks at in one article. Keys are case-folded canonical names ("e:...") and terms."""
    entities: dict[str, float]          # entity key -> salience
    entity_info: dict[str, tuple[str, str]]  # entity key -> (label, display name)
    terms: dict[str, float]             # term -> sublinear tf
    title_terms: tuple[str, ...]
    time: float
    embedding: tuple[float, ...] | None = None
    years: tuple[str, ...] = ()          # years named by dates in the title and the lead of the text
    # Mean lead embedding of the articles seen before this one: the common "kind of news" direction, taken out
    # before cosines so that two reports of one kind (every shooting, every quake) do not look alike for that.
    embedding_mean: tuple[float, ...] | None = None
    numbers: tuple[str, ...] = ()        # "<stemmed word>=<number>" from the title and the lead
    bare_headline: str = ""              # " word word ... " of the title, case-folded, when there is no body
    # Filled by `weigh`, from the document frequencies of the articles that came before:
    entity_vector: dict[str, float] = field(default_factory=dict)  # salience x type weight x idf
    term_vector: dict[str, float] = field(default_factory=dict)    # tf x idf
    index_keys: tuple[str, ...] = field(default=())


def stem(word: str) -> str:
    """A light plural stemmer: enough to let "files"/"file" and "shootings"/"shooting" meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_LONGEST_TERM = 40  # a longer "word" is a run of glued text (a 200,000-character one bloated every state it entered)


def terms_of(text: str) -> list[str]:
    """Content words, stemmed, of 3 to 40 characters; in unspaced scripts, each pair of neighbouring characters (Chinese and Japanese
    words are mostly two characters long; character bigrams are the usual index terms for such text)."""
    out: list[str] = []
    previous = ""
    for w in words(normalize_text(text)):
        if is_solo(w):
            if previous:
                out.append(previous + w)
            previous = w
            continue
        previous = ""
        if 2 < len(w) <= _LONGEST_TERM and w not in _STOPWORDS and not any(c.isdigit() for c in w):
            out.append(stem(w))
    return out


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
# Words after a number that make it a clock time or a date, not a count ("20:09 IST", "1:12 PM", "3 p.m.", "May
# 2"): the counted word is letters and hyphens only, so "p.m." arrives as "p".
_NOT_COUNTED = frozenset("""
am pm p gmt bst utc ist est edt cst cdt pst pdt cet cest eet hrs hr h jan feb mar apr jun jul aug sep sept oct nov
dec january february march april may june july august september october november december
""".split())
# A number glued to a word by a hyphen is part of a name ("K-9 officer", "I-95 crash"), not a count; nor is the
# tail of a date or a number written another way ("9/11 attacks", "1.000.000 euro"). Thousands: "1,000,000".
_COUNTED = re.compile(r"(?<![\w./,-])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|" + "|".join(_NUMBER_WORDS)
                      + r")[\s-]+([a-z][a-z-]*)")


def numbers_of(text: str) -> set[str]:
    """'<word>=<number>' for each number followed by a counted word: "23 Somali pirates" -> "somali=23",
    "16-year-old" -> "year-old=16", "magnitude 5.6" is caught as "5.6 magnitude" only in that order."""
    out = set()
    for number, word in _COUNTED.findall(normalize_text(text).casefold()):
        if (word in _STOPWORDS and word not in ("year", "years")) or word in _NOT_COUNTED or _YEAR.fullmatch(number):
            continue
        out.add(f"{stem(word)}={_NUMBER_WORDS.get(number, number.replace(',', ''))}")
    return out


def entity_key(entity: Entity) -> str:
    return "e:" + entity.canonical.casefold()


def article_features(item: ClusterInput, config: ClusterConfig) -> ArticleFeatures:
    """Entity salience (mentions, a title mention counting `title_boost`), sublinear term frequencies."""
    mass: Counter = Counter()
    labels: dict[str, Counter] = {}
    display: dict[str, str] = {}
    for entity in item.entities:
        if entity.label in NUMERIC_LABELS or entity.label not in _TYPE_WEIGHT:
            continue
        key = entity_key(entity)
        mass[key] += config.title_boost if entity.field == "title" else 1.0
        labels.setdefault(key, Counter())[entity.label] += 1
        display.setdefault(key, entity.canonical)
    entities = {key: 1.0 + math.log(m) if m >= 1 else m for key, m in mass.items()}
    info = {key: (labels[key].most_common(1)[0][0], display[key]) for key in entities}
    title_terms = terms_of(item.title or "")
    counts = Counter(terms_of(item.text or "")) + Counter({t: config.title_boost for t in title_terms})
    terms = {t: 1.0 + math.log(c) for t, c in counts.items()}
    # Rounded to the int8 grid the story keeps: the same article gives the same vector whatever batch computed it.
    embedding = (tuple(dequantize(quantize(item.embedding)))
                 if item.embedding is not None and any(item.embedding) else None)
    years = sorted({y for e in item.entities if e.label == "DATE" and (e.field == "title" or e.start < config.lead_chars)
                    for y in _YEAR.findall(e.text)})
    numbers = numbers_of(item.title or "") | numbers_of((item.text or "")[:config.lead_chars])
    return ArticleFeatures(entities=entities, entity_info=info, terms=terms, title_terms=tuple(title_terms),
                           time=item.event_time, embedding=embedding, years=tuple(years),
                           numbers=tuple(sorted(numbers)), bare_headline=_bare_headline(item))


def _bare_headline(item: ClusterInput) -> str:
    return "" if (item.text or "").strip() else _word_string(item.title or "")


def idf(df: int, n_docs: int) -> float:
    """Smoothed inverse document frequency over the articles seen before this one."""
    return math.log((n_docs + 2) / (df + 1))


def weigh(features: ArticleFeatures, df: Mapping[str, int], n_docs: int, config: ClusterConfig,
          embedding_mean: Sequence[float] | None = None) -> ArticleFeatures:
    """Rarity-weighted vectors and the keys the article is looked up and filed under.

    The weights are frozen with the article: a story sums the vectors of its articles as they were when each
    joined, so a decision never needs frequencies beyond the article's own keys, whatever the batch cut.
    Index keys are the most salient, rarest entities and the rarest title terms (a few of those always),
    bounded in number so that the cost of an article does not grow with the stories ever seen.
    """
    entity_vector = {key: sal * _TYPE_WEIGHT[features.entity_info[key][0]] * idf(df.get(key, 0), n_docs)
                     for key, sal in features.entities.items()}
    term_vector = {t: w * idf(df.get(t, 0), n_docs) for t, w in features.terms.items()}
    title = {t: 0.5 * idf(df.get(t, 0), n_docs) for t in features.title_terms}
    by_title = sorted(title, key=lambda k: (-title[k], k))
    by_entity = sorted(entity_vector, key=lambda k: (-entity_vector[k], k))
    # A few title words always, the rarest first: a report rich in entities must still meet the story whose
    # headline names the place another way ("Chatham" against "South Side Chatham").
    n_entities = min(config.max_index_keys - min(config.index_title_terms, len(by_title)), len(by_entity))
    scored = {**title, **entity_vector}
    keys = sorted(by_entity[:n_entities] + by_title[:config.max_index_keys - n_entities],
                  key=lambda k: (-scored[k], k))
    mean = tuple(embedding_mean) if embedding_mean is not None and features.embedding is not None else None
    return replace(features, entity_vector=entity_vector, term_vector=term_vector, index_keys=tuple(keys),
                   embedding_mean=mean)


def embedding_counts(features: ArticleFeatures) -> list[int] | None:
    """The article's embedding on the int8 grid (x127), as integers: summed exactly into the running mean."""
    if features.embedding is None:
        return None
    return [round(x * 127) for x in features.embedding]


def embedding_mean(sums: Sequence[int], count: int) -> list[float] | None:
    """Mean embedding from the integer sums of `count` articles (None before the first)."""
    return [s / (127.0 * count) for s in sums] if count else None


def df_keys(features: ArticleFeatures) -> list[str]:
    """Every key whose document frequency the article reads and then increments."""
    return list(features.entities) + list(features.terms)


def new_story(story_id: str, item: ClusterInput, features: ArticleFeatures, config: ClusterConfig) -> dict:
    empty = {"id": story_id, "version": 0, "headline": "", "article_count": 0, "copies": 0, "sources": {},
             "entities": {}, "terms": {}, "times": [], "first_seen": item.event_time,
             "last_seen": item.event_time, "keys": {}, "closed": False}
    return merge_article(empty, item, features, config)


def merge_article(story: dict, item: ClusterInput, features: ArticleFeatures, config: ClusterConfig) -> dict:
    """Story state after `item` joins: entity and word mass, times, sources, headline, index keys."""
    times = sorted(story["times"] + [item.event_time])
    if len(times) > config.story_times_kept:  # keep the first report and the latest ones
        times = times[:1] + times[len(times) - (config.story_times_kept - 1):]
    state = {
        **story,
        "article_count": story["article_count"] + 1,
        "sources": _count_source(story["sources"], item.source, config),
        "entities": _with_entities(story["entities"], features, 1, config),
        "terms": heavy_hitters(story["terms"], features.term_vector, config.story_terms_kept),
        "times": times,
        "first_seen": min(story["first_seen"], item.event_time),
        "last_seen": max(story["last_seen"], item.event_time),
        "keys": _with_keys(story["keys"], features.index_keys, config),
        **_with_embedding(story, features, config),
        "years": dict(Counter(story.get("years", {})) + Counter(features.years)),
        "numbers": heavy_hitters(story.get("numbers", {}), dict.fromkeys(features.numbers, 1),
                                 config.story_terms_kept // 4),
    }
    state.update(_headline(story, state, item))
    return state


def _with_keys(keys: Mapping[str, int], new: Sequence[str], config: ClusterConfig) -> dict[str, int]:
    """Index key -> reports of the story filed under it, the latest article's keys last; bounded."""
    out = {k: n for k, n in keys.items() if k not in new}
    out.update({k: keys.get(k, 0) + 1 for k in new})
    kept = set(_by_count(out)[:4 * config.story_keys_filed])
    return {k: n for k, n in out.items() if k in kept}


def _by_count(keys: Mapping[str, int]) -> list[str]:
    """Keys by reports filed under them, the more recent first among equals."""
    recency = {k: i for i, k in enumerate(keys)}
    return sorted(keys, key=lambda k: (-keys[k], -recency[k]))


def latest_report(story: dict) -> float:
    """Event time of the story's latest report: what keeps a story findable (copies and updates do not)."""
    return story["times"][-1]


def filing_keys(story: dict, features: ArticleFeatures, config: ClusterConfig) -> list[str]:
    """Index keys a story is (re-)filed under when `features`' article joins or founds it."""
    return sorted(set(features.index_keys) | set(_by_count(story["keys"])[:config.story_keys_filed]))


def _with_embedding(story: dict, features: ArticleFeatures, config: ClusterConfig) -> dict:
    """Running mean direction of the members' embeddings and the first + latest member vectors, as int8."""
    if features.embedding is None or config.embed_weight <= 0:
        return {}
    n = story.get("emb_n", 0)
    mean = dequantize(story["emb"]) if n else [0.0] * len(features.embedding)
    # The sum of the members' unit vectors is its direction times its length (at most n: less the more they
    # differ); scaled by n instead, the earlier members would outweigh the later ones.
    length = story["emb_len"] if story.get("emb_len_n") == n else n  # written by an older replica: n
    summed = [m * length + x for m, x in zip(mean, features.embedding)]
    norm = math.sqrt(sum(x * x for x in summed)) or 1.0
    members = list(story.get("emb_members", [])) + [quantize(features.embedding)]
    if len(members) > config.embed_members_kept:
        members = members[:1] + members[len(members) - (config.embed_members_kept - 1):]
    return {"emb": quantize([x / norm for x in summed]), "emb_n": n + 1, "emb_len": norm, "emb_len_n": n + 1,
            "emb_members": members}


def replace_article(story: dict, old_entity_vector: Mapping[str, float], item: ClusterInput,
                    features: ArticleFeatures, config: ClusterConfig, replaced: str | None = None,
                    replaced_a_copy: bool = False) -> dict:
    """An article's new version (of `replaced`): its old entity contribution out, the new one in; counts
    unchanged, but for the new version of a copy (an outlet that rewrote the page it had copied): it brings
    entities of its own, so it counts as an article from now on, no longer as a copy. A headline that was the
    replaced version's title becomes the new one (a correction)."""
    removed = ArticleFeatures(entities={}, entity_info={}, terms={}, title_terms=(), time=0.0,
                              entity_vector=dict(old_entity_vector))
    entities = _with_entities(_with_entities(story["entities"], removed, -1, config), features, 1, config)
    state = {**story, "entities": entities, "last_seen": max(story["last_seen"], item.event_time)}
    if replaced_a_copy:
        state.update(article_count=story["article_count"] + 1, copies=max(0, story["copies"] - 1))
    if replaced is not None and story.get("headline_of") == [replaced, story["headline"]] and item.title:
        state.update(headline=item.title, headline_of=[item.article_id, item.title])
    else:
        state.update(_headline(story, state, item))
    return state


def heavy_hitters(counts: Mapping[str, float], added: Mapping[str, float], cap: int) -> dict[str, float]:
    """`counts` plus `added`, at most `cap` keys, by Space-Saving (Metwally et al., 2005): a new key that finds
    the map full takes the place of the lightest one and inherits its count. A story that has filled its map
    still takes in what its latest reports name (a plain top-`cap` would drop each newcomer in favour of the
    mass that older keys have piled up), and a key whose true count exceeds 1/`cap` of the total is never lost.
    Deterministic: newcomers in order of weight then key, the lightest evicted first (ties: the largest key)."""
    if cap <= 0:
        return {}
    out = dict(counts)
    for key, weight in sorted(added.items(), key=lambda kv: (-kv[1], kv[0])):
        if key in out:
            out[key] += weight
            continue
        floor = out.pop(_lightest(out, lambda count: count)) if len(out) >= cap else 0
        out[key] = floor + weight
    return out


def _lightest(out: Mapping[str, object], mass) -> str:
    """The key Space-Saving evicts: the least `mass`, of ties the largest key."""
    return max(out, key=lambda k: (-mass(out[k]), k))


def _with_entities(entities: Mapping[str, list], features: ArticleFeatures, sign: int,
                   config: ClusterConfig) -> dict:
    """Entity mass and article frequency with one article's entities added (sign 1) or taken out (-1).

    Bounded like `heavy_hitters`: a new entity that finds the story's map full takes the place of the one of
    least mass and inherits its mass, not its count of reports (what ranks top entities and admits a name to a
    bare headline: one report's name must not rank as many)."""
    out = {k: list(v) for k, v in entities.items()}
    for key, weight in sorted(features.entity_vector.items(), key=lambda kv: (-kv[1], kv[0])):
        label, name = features.entity_info.get(key, ("", key))
        if key in out:
            out[key][0] += sign * weight
            out[key][1] += sign
            if out[key][1] <= 0:
                del out[key]
            continue
        if sign < 0:
            continue  # already evicted: nothing of it left to take out
        floor = out.pop(_lightest(out, lambda entry: entry[0]))[0] if len(out) >= config.story_entities_kept else 0.0
        out[key] = [floor + weight, 1, label, name]  # reports naming it: counted, never inherited
    return out


def add_copy(story: dict, source: str, event_time: float, config: ClusterConfig) -> dict:
    """A duplicate joins: its outlet counts, `copies` grows, `article_count` does not."""
    return {**story, "copies": story["copies"] + 1, "sources": _count_source(story["sources"], source, config),
            "last_seen": max(story["last_seen"], event_time)}


def _count_source(sources: Mapping[str, int], source: str, config: ClusterConfig) -> dict:
    """Reports per outlet, bounded (`story_sources_kept`, Space-Saving): a story copied by thousands of
    outlets keeps the ones that carry most of it and the latest newcomers."""
    return heavy_hitters(sources, {source: 1} if source else {}, config.story_sources_kept)


def _headline(before: dict, after: dict, item: ClusterInput) -> dict:
    """The title that names most of the story's current top entities (a tie keeps the older one), and the
    article it is the title of, with the title (`headline_of`: a correction of that article replaces it, while
    the headline is still that title: a replica of an earlier version may have changed it meanwhile)."""
    if not before["headline"]:
        return {"headline": item.title or "", "headline_of": [item.article_id, item.title or ""]}
    top = [e[3] for e in _top_entities(after, 8)]

    def cover(title: str) -> int:  # names it spells out in whole words ("US" is not in "business")
        spelled = _word_string(title or "")
        return sum(_spells_out(spelled, name) for name in top)

    if item.title and cover(item.title) > cover(before["headline"]):
        return {"headline": item.title, "headline_of": [item.article_id, item.title]}
    return {"headline": before["headline"], "headline_of": before.get("headline_of")}


def _top_entities(story: dict, n: int) -> list[list]:
    ranked = sorted(story["entities"].values(), key=lambda e: (-e[1], -e[0], e[3]))
    return ranked[:n]


def similarity(features: ArticleFeatures, story: dict, config: ClusterConfig) -> tuple[float, list[str]]:
    """Score of a weighed article against `story`, and the shared entities that carried it.

    Entity and word channels are cosines between the article's vectors and the story's summed vectors;
    distance in event time pulls the score down.
    """
    features = with_story_names(features, story, config)
    story_entities = {k: e[0] for k, e in story["entities"].items()}
    entity_score = _cosine(features.entity_vector, story_entities)
    text_score = _cosine(features.term_vector, story["terms"])
    score = config.entity_weight * entity_score + config.text_weight * text_score
    if config.embed_weight > 0 and features.embedding is not None and story.get("emb_n"):
        score += config.embed_weight * embedding_score(features.embedding, story, config,
                                                         features.embedding_mean if config.embed_center else None)
    apart = _time_distance(features.time, story["times"], config)
    if apart and config.people_bridge_time:
        apart *= 1.0 - _shared_people_share(features, story)
    score -= config.time_weight * apart
    if config.number_penalty and features.numbers and story.get("numbers"):
        score -= config.number_penalty * _number_conflict(features.numbers, story["numbers"])
    if config.year_penalty and features.years and story.get("years") and not set(features.years) & set(story["years"]):
        score -= config.year_penalty
    shared = sorted(set(features.entity_vector) & set(story_entities),
                    key=lambda k: (-features.entity_vector[k] * story_entities[k], k))
    return score, [story["entities"][k][3] for k in shared]


def with_story_names(features: ArticleFeatures, story: dict, config: ClusterConfig) -> ArticleFeatures:
    """A bare headline's entities plus the story's entities whose names it spells out (whole words), each at
    the story's mean weight for that entity: how the article is scored against the story and joins it.

    Only names at least two of the story's reports gave: one headline's NER can be wrong ("Bank" in "Bank to
    appoint new deputy governor"), and a generic name would pull unrelated headlines in."""
    if not (config.headline_names and features.bare_headline):
        return features
    spelled = {key: (mass / freq, label, name) for key, (mass, freq, label, name) in story["entities"].items()
               if key not in features.entity_vector and freq > 1 and _spells_out(features.bare_headline, name)}
    if not spelled:
        return features
    return replace(features, entity_vector={**features.entity_vector, **{k: v[0] for k, v in spelled.items()}},
                   entity_info={**features.entity_info, **{k: (v[1], v[2]) for k, v in spelled.items()}})


def _spells_out(headline: str, name: str) -> bool:
    folded = _name_words(name)
    return folded != "  " and folded in headline


@lru_cache(maxsize=16_384)
def _name_words(name: str) -> str:
    return _word_string(name)


def _word_string(text: str) -> str:
    """' word word ' case-folded, possessives dropped as in canonical names ("McDonald's" -> "mcdonald")."""
    folded = [w[:-2] if w.endswith("'s") else w for w in words(normalize_text(text))]
    return " " + " ".join(folded) + " "


def _number_conflict(numbers: Sequence[str], story_numbers: Mapping[str, int]) -> float:
    """1 when the article counts something the story counts too, always differently; else 0."""
    story_by_word: dict[str, set[str]] = {}
    for item in story_numbers:
        word, _, value = item.partition("=")
        story_by_word.setdefault(word, set()).add(value)
    agree = conflict = 0
    for item in numbers:
        word, _, value = item.partition("=")
        if word in story_by_word:
            if value in story_by_word[word]:
                agree += 1
            else:
                conflict += 1
    return 1.0 if conflict and not agree else 0.0


def embedding_score(vector: Sequence[float], story: dict, config: ClusterConfig,
                    mean: Sequence[float] | None = None) -> float:
    """Cosine with the story (centroid, or the nearest of centroid and kept members), floor removed, 0..1.

    With `mean`, both sides are centred on it first (cosine of what sets them apart from the usual news)."""
    packed = [story["emb"]] + (list(story.get("emb_members", [])) if config.embed_mode == "max" else [])
    matrix = unpack(packed)
    v = np.asarray(vector, dtype=np.float32)
    if mean is not None:
        mu = np.asarray(mean, dtype=np.float32)
        v = v - mu
        matrix = matrix - mu
        v = v / max(float(np.linalg.norm(v)), 1e-9)
        matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
    best = float(max(matrix @ v))
    return max(0.0, best - config.embed_floor) / (1.0 - config.embed_floor)


def _cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) < len(b) else (b, a)
    dot = sum(w * large[k] for k, w in small.items() if k in large)
    if not dot:
        return 0.0
    return dot / math.sqrt(sum(w * w for w in a.values()) * sum(w * w for w in b.values()))


def _shared_people_share(features: ArticleFeatures, story: dict) -> float:
    """Share of the article's entity weight on people the story names too (rare names weigh most, so a police
    chief quoted after every shooting in town counts little)."""
    total = sum(features.entity_vector.values())
    shared = sum(w for key, w in features.entity_vector.items()
                 if key in story["entities"] and story["entities"][key][2] == "PERSON"
                 and features.entity_info[key][0] == "PERSON")
    return shared / total if total > 0 else 0.0


def _time_distance(time: float, story_times: Sequence[float], config: ClusterConfig) -> float:
    """0 within the grace period, towards 1 as the article moves away from every article of the story."""
    if not story_times:
        return 0.0
    days = max(0.0, min(abs(time - t) for t in story_times) / DAY - config.time_grace_days)
    return days / (days + config.time_scale_days)


_SOURCES_SHOWN = ClusterConfig.story_sources_kept


def public_view(story: dict, top_n: int = 10) -> dict:
    """The story state consumers see: headline, counts, sources, top entities, ISO times."""
    return {
        "headline": story["headline"],
        "article_count": story["article_count"],
        "copies": story["copies"],
        # most reports first; capped here too for a story state written before outlets were bounded
        "sources": sorted(story["sources"], key=lambda s: (-story["sources"][s], s))[:_SOURCES_SHOWN],
        "top_entities": [{"canonical": e[3], "label": e[2], "count": e[1]} for e in _top_entities(story, top_n)],
        "first_seen": iso_utc(story["first_seen"]),
        "last_seen": iso_utc(story["last_seen"]),
        "closed": bool(story.get("closed")),
    }


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Decision:
    """Where an article goes: `story_id` None means it starts a new story."""
    story_id: str | None
    score: float | None
    runner_up: dict | None
    shared_entities: list[str]


def rank_candidates(features: ArticleFeatures, postings: Mapping[str, Mapping[str, float]], since: float,
                    config: ClusterConfig) -> list[str]:
    """Active stories (latest report at or after `since`) filed under the article's index keys, most keys first."""
    hits: Counter = Counter()
    for rank, key in enumerate(features.index_keys):
        for story_id, reported in postings.get(key, {}).items():
            if reported >= since:
                hits[story_id] += 1.0 / (1 + 0.1 * rank)
    return [s for s, _ in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:config.max_candidates]]


def decide(features: ArticleFeatures, candidates: Sequence[dict], config: ClusterConfig) -> Decision:
    """Best candidate when it clears the threshold, with the runner-up for the record."""
    scored = sorted(((*similarity(features, story, config), story["id"]) for story in candidates),
                    key=lambda s: (-s[0], s[2]))
    runner_up = {"story_id": scored[1][2], "score": round(scored[1][0], 4)} if len(scored) > 1 else None
    if not scored or scored[0][0] < config.threshold:
        best = {"story_id": scored[0][2], "score": round(scored[0][0], 4)} if scored else None
        return Decision(None, None, best, [])
    score, shared, story_id = scored[0]
    return Decision(story_id, round(score, 4), runner_up, shared[:5])
