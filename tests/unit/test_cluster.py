"""Similarity and assignment on self-written fixtures, driven through the pure core in memory."""
import base64
from collections import Counter
from dataclasses import replace

import pytest

from worker.core.cluster import (DAY, ClusterConfig, ClusterInput, add_copy, article_features, decide,
                                 df_keys, embedding_counts, embedding_mean, embedding_score, filing_keys,
                                 heavy_hitters, merge_article, new_story, numbers_of, public_view, rank_candidates,
                                 replace_article, similarity, weigh, with_story_names)
from worker.core.embedding import DIM, dequantize, lead_of, quantize
from worker.core.entities import Entity

CONFIG = ClusterConfig()
T0 = 1_700_000_000.0


def article(article_id, title, text, names, day=0.0, source="outlet"):
    """names: (canonical, label) pairs; each becomes one mention in the text."""
    entities = [Entity(text=n, label=label, start=0, end=len(n), canonical=n, field="text") for n, label in names]
    return ClusterInput(article_id, title, text, source, f"https://x.example/{article_id}", T0 + day * DAY,
                        entities, "en")


def replay(items, config=CONFIG, window_days=30.0):
    """Sequential assignment with the candidate index in memory: article id -> story id."""
    df, n_docs, postings, stories, out = Counter(), 0, {}, {}, {}
    for item in items:
        features = weigh(article_features(item, config), df, n_docs, config)
        since = item.event_time - window_days * DAY
        candidates = rank_candidates(features, postings, since, config)
        decision = decide(features, [stories[s] for s in candidates], config)
        if decision.story_id is None:
            story_id = f"s{len(stories)}"
            stories[story_id] = new_story(story_id, item, features, config)
        else:
            story_id = decision.story_id
            features = with_story_names(features, stories[story_id], config)
            stories[story_id] = merge_article(stories[story_id], item, features, config)
        for key in filing_keys(stories[story_id], features, config):
            postings.setdefault(key, {})[story_id] = stories[story_id]["last_seen"]
        df.update(set(df_keys(features)))
        n_docs += 1
        out[item.article_id] = story_id
    return out, stories


QUAKE_A = [("Sumatra", "GPE"), ("Indonesia", "GPE"), ("Banda Aceh", "GPE")]
QUAKE_B = [("Oaxaca", "GPE"), ("Mexico", "GPE"), ("Pinotepa", "GPE")]
BACKGROUND = [
    article("bg1", "Council approves budget", "The city council approved the school budget.", [("Denver", "GPE")]),
    article("bg2", "Team wins final", "The home team won the cup final in overtime.", [("Boston", "GPE")]),
    article("bg3", "Storm closes roads", "Heavy snow closed mountain roads overnight.", [("Utah", "GPE")]),
] + [  # earlier events of the same kinds, outside the window: they make the shared vocabulary common
    article(f"old{n}", f"Strong earthquake strikes {place}", f"A strong earthquake struck {place}, shaking buildings;"
            " a gunman shot people outside a bar, police said; buildings collapsed and rescuers searched rubble.",
            [(place, "GPE")], day=-100 + n)
    for n, place in enumerate(["Chile", "Peru", "Japan", "Nepal", "Turkey", "Italy", "Iran", "Greece"])
]


def quake(article_id, place_names, text, day):
    return article(article_id, f"Strong earthquake strikes {place_names[0][0]}", text, place_names, day=day)


def test_reports_of_one_event_join_one_story():
    items = BACKGROUND + [
        quake("a1", QUAKE_A, "A strong earthquake struck off Sumatra, shaking Banda Aceh in Indonesia.", 1),
        quake("a2", QUAKE_A, "Buildings collapsed in Banda Aceh after the Sumatra earthquake, Indonesia said.", 1.2),
        quake("a3", QUAKE_A[:2], "Rescuers searched rubble on Sumatra a day after the earthquake.", 2),
    ]
    out, _ = replay(items)
    assert out["a1"] == out["a2"] == out["a3"]
    assert len({out["bg1"], out["bg2"], out["bg3"], out["a1"]}) == 4


def test_two_similar_events_stay_apart():
    items = BACKGROUND + [
        quake("a1", QUAKE_A, "A strong earthquake struck off Sumatra, shaking Banda Aceh in Indonesia.", 1),
        quake("b1", QUAKE_B, "A strong earthquake struck Oaxaca, shaking Pinotepa in Mexico.", 1.5),
        quake("a2", QUAKE_A, "Buildings collapsed in Banda Aceh after the Sumatra earthquake.", 2),
        quake("b2", QUAKE_B, "Buildings collapsed in Pinotepa after the Oaxaca earthquake.", 2),
    ]
    out, _ = replay(items)
    assert out["a1"] == out["a2"]
    assert out["b1"] == out["b2"]
    assert out["a1"] != out["b1"]


def test_time_distance_lowers_the_score_and_the_window_ends_a_story():
    first = article("s1", "Two shot outside bar in Springfield",
                    "A gunman shot two people outside a bar on Main Street, police in Springfield said.",
                    [("Springfield", "GPE"), ("Main Street", "FAC")], day=1)

    def sparse(day):
        return article("s2", "Springfield police seek gunman", "Police are looking for a gunman.",
                       [("Springfield", "GPE")], day=day)

    features = weigh(article_features(first, CONFIG), Counter(), 0, CONFIG)
    story = new_story("s", first, features, CONFIG)
    scores = [decide(weigh(article_features(sparse(day), CONFIG), Counter(features.entities), 1, CONFIG),
                     [story], CONFIG) for day in (1.3, 10, 40)]
    assert scores[0].story_id == "s"
    assert scores[0].score > scores[1].score > (scores[2].score or scores[2].runner_up["score"])
    assert replay([first, sparse(40)], window_days=30)[0]["s2"] != "s0"


def test_a_late_report_naming_the_story_s_people_is_less_far_apart():
    """A plea months later names the accused: the time penalty shrinks by the share of the article's entity
    weight on people the story names; a late report sharing only the city keeps the full penalty."""
    shooting = [("Dayton", "GPE"), ("Cornell McKennelly", "PERSON"), ("Tavon Hall", "PERSON")]
    first = article("d1", "Man killed outside Dayton club", "Cornell McKennelly is accused of shooting Tavon Hall "
                    "outside a club in Dayton.", shooting)
    plea = article("d2", "Dayton man pleads guilty", "Cornell McKennelly pleaded guilty in the killing of Tavon "
                   "Hall.", shooting, day=150)
    other = article("d3", "Dayton man pleads guilty", "A man pleaded guilty in a Dayton killing.",
                    [("Dayton", "GPE")], day=150)
    off = ClusterConfig(people_bridge_time=False)
    late, late_off = _score(first, plea)[1], _score(first, plea, off)[1]
    same_day = _score(first, replace(plea, event_time=first.event_time))[1]
    assert late_off < late < same_day
    assert _score(first, other)[1] == _score(first, other, off)[1]


def test_candidates_come_only_from_the_index_and_the_window():
    items = [quake("a1", QUAKE_A, "Earthquake off Sumatra.", 0)]
    out, stories = replay(items)
    story = stories[out["a1"]]
    features = weigh(article_features(quake("a2", QUAKE_A, "Sumatra earthquake.", 1), CONFIG), Counter(), 1,
                     CONFIG)
    postings = {k: {story["id"]: story["last_seen"]} for k in story["keys"]}
    assert rank_candidates(features, postings, T0, CONFIG) == [story["id"]]
    assert rank_candidates(features, postings, T0 + 0.5 * DAY, CONFIG) == []
    assert rank_candidates(features, {}, T0, CONFIG) == []


def test_a_report_rich_in_entities_is_still_filed_under_its_headline_words():
    places = [(f"Street {i}", "FAC") for i in range(20)] + [("South Side Chatham", "GPE")]
    rich = weigh(article_features(article("a", "Police: 1 dead, 3 hurt in shooting at Chatham club",
                                          "One man was killed.", places), CONFIG), Counter(), 1, CONFIG)
    assert len(rich.index_keys) == CONFIG.max_index_keys
    assert {"chatham", "club"} <= set(rich.index_keys)
    assert sum(k.startswith("e:") for k in rich.index_keys) == CONFIG.max_index_keys - CONFIG.index_title_terms
    sparse = weigh(article_features(article("b", "Shooting", "One man was killed.", places), CONFIG), Counter(),
                   1, CONFIG)
    assert len(sparse.index_keys) == CONFIG.max_index_keys and "shooting" in sparse.index_keys


def test_a_long_running_story_is_filed_under_its_most_common_keys_and_the_joining_article_s():
    """The cost of a join does not grow with the story: its keys are counted, bounded, and re-filed in part."""
    config = replace(CONFIG, story_keys_filed=4)
    story, df = None, Counter()
    for n in range(60):
        item = article(f"r{n}", f"Harbour inquiry hears witness{n}", "The harbour flood inquiry went on.",
                       [("Harbour City", "GPE"), (f"Witness{n} Quist", "PERSON")], day=n * 0.1)
        features = weigh(article_features(item, config), df, n, config)
        story = new_story("s", item, features, config) if story is None else merge_article(story, item, features,
                                                                                           config)
        df.update(set(df_keys(features)))
    assert len(story["keys"]) <= 16
    filed = filing_keys(story, features, config)
    assert set(features.index_keys) <= set(filed) and len(filed) <= 4 + len(features.index_keys)
    assert "e:harbour city" in filed and story["keys"]["e:harbour city"] == 60
    assert "e:witness3 quist" not in story["keys"]  # a name one early report gave is no longer kept


def test_story_state_stays_current():
    first = quake("a1", QUAKE_A, "Earthquake off Sumatra.", 0)
    second = article("a2", "Sumatra earthquake kills dozens in Banda Aceh", "Dozens died in Banda Aceh.",
                     QUAKE_A, day=1, source="other")
    f1 = weigh(article_features(first, CONFIG), Counter(), 0, CONFIG)
    f2 = weigh(article_features(second, CONFIG), Counter(), 1, CONFIG)
    story = merge_article(new_story("s", first, f1, CONFIG), second, f2, CONFIG)
    story = add_copy(story, "copier", T0 + 2 * DAY, CONFIG)
    view = public_view(story)
    assert view["article_count"] == 2 and view["copies"] == 1
    assert set(view["sources"]) == {"outlet", "other", "copier"}
    assert view["headline"] == "Sumatra earthquake kills dozens in Banda Aceh"  # names more top entities
    assert {"canonical": "Sumatra", "label": "GPE", "count": 2} in view["top_entities"]
    assert view["first_seen"].endswith("Z") and view["last_seen"] > view["first_seen"]


def test_a_story_at_its_caps_still_takes_in_what_its_latest_reports_name():
    """Entities, words and outlets are bounded; a story that filled its maps still takes in a name its new
    reports keep giving (a plain top-k by mass dropped it at every join: older names had piled up mass)."""
    config = replace(CONFIG, story_entities_kept=16, story_terms_kept=40, story_sources_kept=8)
    story, df = None, Counter()
    for n in range(60):
        names = [("Harbour City", "GPE")] + [(f"Witness{n} Quist{k}", "PERSON") for k in range(3)]
        if n >= 40:
            names.append(("Homer Simpson", "PERSON"))
        item = article(f"r{n}", "Harbour inquiry hears witnesses", f"The harbour inquiry went on. word{n}a word{n}b"
                       + (" embezzlement" if n >= 40 else ""), names, day=n * 0.1, source=f"outlet{n}")
        features = weigh(article_features(item, config), df, 1000 + n, config)  # among 1000 other articles
        story = new_story("s", item, features, config) if story is None else merge_article(story, item, features,
                                                                                           config)
        df.update(set(df_keys(features)))
        assert len(story["entities"]) <= 16 and len(story["terms"]) <= 40 and len(story["sources"]) <= 8
    top = [e["canonical"] for e in public_view(story)["top_entities"]]
    assert top[:2] == ["Harbour City", "Homer Simpson"], top
    assert "embezzlement" in story["terms"] and "outlet59" in story["sources"]
    for _ in range(1000):  # copies from a thousand outlets
        story = add_copy(story, f"copier{_}", T0 + 7 * DAY, config)
    assert len(story["sources"]) <= 8 and len(public_view(story)["sources"]) <= 8


def test_a_name_one_report_gives_never_ranks_above_names_many_reports_give():
    """A newcomer in a full entity map inherits the evicted mass (Space-Saving), never its count of reports."""
    config = replace(CONFIG, story_entities_kept=3)
    story, df = None, Counter()
    for n in range(10):
        names = [("Alpha Corp", "ORG"), ("Beta Town", "GPE")] + ([("Low Key", "PERSON")] if n == 0 else [])
        item = article(f"r{n}", "Alpha Corp plant in Beta Town", "Alpha Corp said.", names, day=n * 0.1)
        features = weigh(article_features(item, config), df, 1000 + n, config)
        story = new_story("s", item, features, config) if story is None else merge_article(story, item, features,
                                                                                           config)
        df.update(set(df_keys(features)))
    item = article("late", "Bank to appoint", "A bank.", [("Bank", "ORG")], day=1.5)
    story = merge_article(story, item, weigh(article_features(item, config), df, 1010, config), config)
    counts = {e["canonical"]: e["count"] for e in public_view(story)["top_entities"]}
    assert counts.get("Bank") == 1 and counts["Alpha Corp"] == 10 and counts["Beta Town"] == 10, counts
    assert heavy_hitters({"a": 1.0}, {"b": 1.0}, 0) == {}


def test_an_embedding_length_written_for_another_member_count_is_not_trusted():
    """A replica of an earlier version merges without updating `emb_len`: the count is the fallback."""
    config = ClusterConfig(embed_center=False)
    first = _with_vector(article("a", "Quake", "Fell.", []), _unit(1.0))
    state = new_story("s", first, weigh(article_features(first, config), Counter(), 0, config), config)
    assert (state["emb_len"], state["emb_len_n"]) == (1.0, 1)
    stale = {**state, "emb_n": 30}  # 29 members merged by older code
    other = _with_vector(article("b", "Quake", "Fell.", []), _unit(0.0, 1.0))
    merged = merge_article(stale, other, weigh(article_features(other, config), Counter(), 1, config), config)
    assert dequantize(merged["emb"])[0] > 0.95  # weighed as 30 members, not as 1


def test_the_first_and_latest_times_and_member_vectors_are_kept_down_to_a_cap_of_one():
    config = replace(CONFIG, story_times_kept=1, embed_members_kept=1)
    story = None
    for n in range(5):
        item = replace(article(f"r{n}", "Harbour inquiry", "The inquiry went on.", [("Harbour City", "GPE")],
                               day=n), embedding=[1.0] + [0.0] * (DIM - 1))
        features = weigh(article_features(item, config), Counter(), n, config)
        story = new_story("s", item, features, config) if story is None else merge_article(story, item, features,
                                                                                           config)
    assert story["times"] == [T0] and len(story["emb_members"]) == 1


def test_a_correction_of_the_article_that_gave_the_headline_replaces_it():
    springfield = [("Springfield", "GPE"), ("Illinois", "GPE")]
    first = article("a1", "Quake kills 3 in Springfield, Illinois", "A quake hit Springfield.", springfield)
    second = article("a2", "Rescuers search rubble", "Rescuers searched Springfield.", springfield, day=0.5)
    f1 = weigh(article_features(first, CONFIG), Counter(), 0, CONFIG)
    f2 = weigh(article_features(second, CONFIG), Counter(), 1, CONFIG)
    story = merge_article(new_story("s", first, f1, CONFIG), second, f2, CONFIG)
    assert story["headline"] == first.title
    corrected = replace(first, article_id="a1-v2", title="Quake kills 30 in Springfield, Illinois")
    fixed = replace_article(story, f1.entity_vector, corrected, f1, CONFIG, replaced="a1")
    assert fixed["headline"] == corrected.title and fixed["headline_of"] == ["a1-v2", corrected.title]
    again = replace(corrected, article_id="a1-v3", title="Quake kills 31 in Springfield, Illinois")
    assert replace_article(fixed, f1.entity_vector, again, f1, CONFIG, replaced="a1-v2")["headline"] == again.title
    # an update of another article keeps the headline unless its title names more of the story
    edited = replace(second, article_id="a2-v2", title="Rescue goes on")
    assert replace_article(fixed, f2.entity_vector, edited, f2, CONFIG, replaced="a2")["headline"] == corrected.title
    # a headline changed meanwhile (by a replica of an earlier version, which keeps `headline_of`) stays
    moved = {**fixed, "headline": "Aftershocks rattle Springfield"}
    late = replace(corrected, article_id="a1-v3b", title="Quake toll rises")
    assert replace_article(moved, f1.entity_vector, late, f1, CONFIG, replaced="a1-v2")["headline"] == \
        "Aftershocks rattle Springfield"


def test_the_headline_counts_names_in_whole_words_only():
    """"US" is not in "business", nor "Iran" in "Iranian": a title naming none of the top entities does not
    replace one that names them."""
    names = [("Iran", "GPE"), ("US", "GPE"), ("Oman", "GPE")]
    first = article("a1", "Iran and US talks resume", "Iran and US resume talks in Oman.", names)
    second = article("a2", "Russian business daily praises Iranian trust in Omani port", "Iran and US met in Oman.",
                     names, day=0.1)
    f1 = weigh(article_features(first, CONFIG), Counter(), 0, CONFIG)
    f2 = weigh(article_features(second, CONFIG), Counter(), 1, CONFIG)
    story = merge_article(new_story("s", first, f1, CONFIG), second, f2, CONFIG)
    assert story["headline"] == "Iran and US talks resume"


def test_the_lead_drops_a_repeated_headline_but_not_a_word_that_starts_like_it():
    assert lead_of("Fire", "Fire. Crews fought it.") == "Fire. Crews fought it."
    assert lead_of("Fire", "Firefighters battled it.") == "Fire. Firefighters battled it."
    assert lead_of("Obama", "Obama's visit ended.") == "Obama. Obama's visit ended."
    assert lead_of("Fire", "Fire") == "Fire"  # a body that only repeats the headline


def test_numeric_entities_carry_no_weight():
    item = article("n", "t", "x", [("Tuesday", "DATE"), ("12", "CARDINAL"), ("Harbin", "GPE")])
    assert set(article_features(item, CONFIG).entities) == {"e:harbin"}


# ---- lead years and lead embeddings ---------------------------------------------------------------------------

def _dated(article_id, title, text, names, years=()):
    """Like `article`, with one DATE entity per year at the start of the text (a dateline)."""
    item = article(article_id, title, text, names)
    dates = [Entity(text=f"May 2, {y}", label="DATE", start=0, end=11, canonical=f"May 2, {y}", field="text")
             for y in years]
    return ClusterInput(item.article_id, item.title, item.text, item.source, item.url, item.event_time,
                        list(item.entities) + dates, item.language, item.embedding)


def _against(reports, item, config=CONFIG):
    """Decision and score of `item` against the one story `reports` make, in order."""
    df, story = Counter(), None
    for n, report in enumerate(reports):
        f = weigh(article_features(report, config), df, n, config)
        story = new_story("s", report, f, config) if story is None else merge_article(story, report, f, config)
        df.update(set(df_keys(f)))
    features = weigh(article_features(item, config), df, len(reports), config)
    return decide(features, [story], config), similarity(features, story, config)[0]


def _score(first, second, config=CONFIG):
    return _against([first], second, config)


def test_a_lead_year_no_report_of_the_story_names_pulls_the_score_down():
    text = "The navy captured pirates in the Gulf of Aden after a chase, officials said."
    names = [("Gulf of Aden", "LOC"), ("India", "GPE")]
    base = _dated("a", "Navy captures pirates", text, names, years=["2008"])
    same = _score(base, _dated("b", "Navy captures pirates", text, names, years=["2008"]))[1]
    other = _score(base, _dated("c", "Navy captures pirates", text, names, years=["2011"]))[1]
    undated = _score(base, _dated("d", "Navy captures pirates", text, names))[1]
    assert abs((same - other) - CONFIG.year_penalty) < 1e-9
    assert undated == same  # no year on one side: no evidence either way


def _unit(*weights, dim=DIM):
    vector = [0.0] * dim
    for i, w in enumerate(weights):
        vector[i] = w
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector]


def _with_vector(item, vector):
    return ClusterInput(item.article_id, item.title, item.text, item.source, item.url, item.event_time,
                        item.entities, item.language, vector)


def test_the_lead_embedding_channel_counts_above_its_floor_and_stays_compact():
    config = ClusterConfig(embed_center=False)
    first = _with_vector(article("a", "Quake strikes", "Buildings fell.", []), _unit(1.0))
    close = _with_vector(article("b", "Tremor shakes", "Walls cracked.", []), _unit(1.0, 0.1))
    far = _with_vector(article("c", "Tremor shakes", "Walls cracked.", []), _unit(0.0, 1.0))
    assert _score(first, close, config)[1] > 0.9 * config.embed_weight
    assert _score(first, far, config)[1] <= 0.0
    state = new_story("s", first, weigh(article_features(first, config), Counter(), 0, config), config)
    for n in range(20):
        item = _with_vector(article(f"x{n}", "Quake", "Fell.", []), _unit(1.0, n / 20))
        state = merge_article(state, item, weigh(article_features(item, config), Counter(), 1, config), config)
    assert state["emb_n"] == 21 and len(state["emb_members"]) == config.embed_members_kept
    assert all(len(base64.b64decode(p)) == DIM for p in state["emb_members"] + [state["emb"]])  # int8: 384 bytes


def test_the_story_embedding_is_the_mean_direction_of_all_its_members_alike():
    """Ten members, each half a shared direction and half its own: the first weighs as much as the tenth."""
    config = ClusterConfig(embed_center=False)
    state = None
    for n in range(10):
        vector = [0.0] * DIM
        vector[0], vector[1 + n] = 0.5 ** 0.5, 0.5 ** 0.5  # pairwise cosine 0.5
        item = _with_vector(article(f"m{n}", "Quake", "Fell.", []), vector)
        features = weigh(article_features(item, config), Counter(), n, config)
        state = new_story("s", item, features, config) if state is None else merge_article(state, item, features,
                                                                                           config)
    mean = dequantize(state["emb"])
    own = mean[1:11]
    assert max(own) - min(own) <= 0.02, own  # int8 steps are 1/127
    # the sum: 10 * sqrt(.5) along the shared axis, sqrt(.5) along each own one; |sum|^2 = 100 * .5 + 10 * .5
    assert abs(sum(own) / 10 - 0.5 ** 0.5 / 55 ** 0.5) <= 0.01 and abs(mean[0] - 10 * 0.5 ** 0.5 / 55 ** 0.5) <= 0.01


def test_centring_takes_out_what_every_article_shares():
    config = ClusterConfig()
    shared = _unit(1.0)  # the "kind of news" every article of the stream points to
    first = _with_vector(article("a", "Shooting", "Police said.", []), _unit(1.0, 0.3))
    second = _with_vector(article("b", "Shooting", "Police said.", []), _unit(1.0, 0.0, 0.3))
    f1 = weigh(article_features(first, config), Counter(), 0, config)
    story = new_story("s", first, f1, config)
    raw = embedding_score(weigh(article_features(second, config), Counter(), 1, config).embedding, story, config)
    f2 = weigh(article_features(second, config), Counter(), 1, config, embedding_mean=shared)
    assert raw > 0.8 and embedding_score(f2.embedding, story, config, f2.embedding_mean) == 0.0
    assert embedding_mean(embedding_counts(f1), 1) == pytest.approx(list(f1.embedding))


def test_a_headline_only_article_joins_its_story_with_the_one_config():
    config = ClusterConfig()
    first = ClusterInput("h1", "Sbarro files for bankruptcy again", "", "o1", "https://x.example/h1", T0,
                         [Entity("Sbarro", "ORG", 0, 6, "Sbarro", "title")], "en")
    second = ClusterInput("h2", "Pizza chain Sbarro files for Chapter 11", None, "o2", "https://x.example/h2",
                          T0 + 3600, [Entity("Sbarro", "ORG", 12, 18, "Sbarro", "title")], "en")
    decision, _ = _score(first, second, config)
    assert decision.story_id == "s"
    assert lead_of(second.title, second.text) == second.title and lead_of("T", "") == "T"


def test_a_bare_headline_counts_the_story_names_it_spells_out():
    """NER misses names in Title-Case headlines: a headline with no body borrows the candidate story's entities
    that two reports or more gave and that it spells out in whole words; an article with a body does not."""
    games = [("Titanfall", "PRODUCT"), ("Respawn", "ORG")]
    reports = [article("g1", "Respawn: Titanfall servers hold up", "Respawn said Titanfall servers on Microsoft "
                       "Azure held up at launch.", games + [("Microsoft", "ORG")]),
               article("g2", "Titanfall launch goes smoothly", "Respawn's Titanfall launched without outages.",
                       games, day=0.1)]
    bare = ClusterInput("g3", "Early UK Titanfall players won't be banned", None, "o2", "https://x.example/g3",
                        T0 + 0.2 * DAY, [], "en")
    off = ClusterConfig(headline_names=False)
    assert _against(reports, bare)[1] > _against(reports, bare, off)[1]
    assert _against(reports, bare)[0].shared_entities == ["Titanfall"]
    unchanged = [replace(bare, text="Players who started early will keep their accounts."),  # NER had a body
                 replace(bare, title="Early UK Titan players won't be banned"),  # whole words only
                 replace(bare, title="Microsoft cloud holds up for players")]  # named by one report only
    for item in unchanged:
        assert _against(reports, item)[1] == _against(reports, item, off)[1]
    burgers = [article(f"m{n}", "McDonald's sales fall", "McDonald's said sales fell.", [("McDonald", "ORG")],
                       day=0.1 * n) for n in range(2)]
    possessive = replace(bare, title="McDonald’s Sales Tank In February")
    assert _against(burgers, possessive)[0].shared_entities == ["McDonald"]  # canonical names drop the 's

    assignment, stories = replay(reports + [bare])
    assert assignment["g3"] == assignment["g1"]
    counts = {e["canonical"]: e["count"] for e in public_view(stories[assignment["g1"]])["top_entities"]}
    assert counts["Titanfall"] == 3 and counts["Microsoft"] == 1


def test_quantised_vectors_keep_cosines():
    vector = _unit(0.3, -0.5, 0.8, 0.1)
    back = dequantize(quantize(vector))
    assert sum(a * b for a, b in zip(vector, back)) > 0.995


def test_different_counts_of_the_same_thing_pull_the_score_down():
    names = [("Toledo", "GPE")]
    base = article("a", "2 killed, 3 wounded in Toledo shooting", "Police said the gunman fled.", names)
    agree = article("b", "2 killed, 3 wounded in Toledo shooting", "Police said the gunman fled.", names)
    differ = article("c", "4 killed, 1 wounded in Toledo shooting", "Police said the gunman fled.", names)
    mixed = article("d", "2 killed, 1 wounded in Toledo shooting", "Police said the gunman fled.", names)
    assert numbers_of("A 16-year-old and five others hurt") == {"year-old=16", "other=5"}
    same, other, partly = (_score(base, x)[1] for x in (agree, differ, mixed))
    assert abs((same - other) - CONFIG.number_penalty) < 0.05  # the words differ a little too ("4", "1")
    assert partly > other  # one count in common: a later toll of the same event, no penalty


def test_clock_times_years_and_hyphenated_names_are_not_counts():
    lead = "Updated: November 11, 2011 20:09 IST. In 2011 Indian sailors held 26 pirates at 3 pm, freed at 5 p.m."
    assert numbers_of(lead) == {"pirate=26"}
    assert numbers_of("Wounded K-9 officer found; I-95 closed after 2 shot") == {"shot=2"}


def test_a_count_is_read_whole_and_the_tail_of_a_date_or_foreign_number_is_none():
    assert numbers_of("1,000,000 barrels spilled") == {"barrel=1000000"} != numbers_of("2,000,000 barrels spilled")
    assert numbers_of("9/11 attacks remembered") == set() and numbers_of("1.000.000 Euro gestohlen") == set()


def test_unspaced_text_gives_character_pairs_as_terms():
    from worker.core.cluster import terms_of

    assert terms_of("上海推广 policy shifts") == ["上海", "海推", "推广", "policy", "shift"]


def test_a_run_of_glued_text_is_no_term():
    from worker.core.cluster import terms_of

    assert terms_of("storm " + "x" * 41 + " harbour " + "y" * 40) == ["storm", "harbour", "y" * 40]
