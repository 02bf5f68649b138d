"""Similarity and assignment on self-written fixtures, driven through the pure core in memory."""
from collections import Counter

from worker.core.cluster import (DAY, ClusterConfig, ClusterInput, add_copy, article_features, decide,
                                 df_keys, merge_article, new_story, public_view, rank_candidates, weigh)
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
            stories[story_id] = merge_article(stories[story_id], item, features, config)
        for key in stories[story_id]["keys"]:
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


def test_story_state_stays_current():
    first = quake("a1", QUAKE_A, "Earthquake off Sumatra.", 0)
    second = article("a2", "Sumatra earthquake kills dozens in Banda Aceh", "Dozens died in Banda Aceh.",
                     QUAKE_A, day=1, source="other")
    f1 = weigh(article_features(first, CONFIG), Counter(), 0, CONFIG)
    f2 = weigh(article_features(second, CONFIG), Counter(), 1, CONFIG)
    story = merge_article(new_story("s", first, f1, CONFIG), second, f2, CONFIG)
    story = add_copy(story, "copier", T0 + 2 * DAY)
    view = public_view(story)
    assert view["article_count"] == 2 and view["copies"] == 1
    assert set(view["sources"]) == {"outlet", "other", "copier"}
    assert view["headline"] == "Sumatra earthquake kills dozens in Banda Aceh"  # names more top entities
    assert {"canonical": "Sumatra", "label": "GPE", "count": 2} in view["top_entities"]
    assert view["first_seen"].endswith("Z") and view["last_seen"] > view["first_seen"]


def test_numeric_entities_carry_no_weight():
    item = article("n", "t", "x", [("Tuesday", "DATE"), ("12", "CARDINAL"), ("Harbin", "GPE")])
    assert set(article_features(item, CONFIG).entities) == {"e:harbin"}
