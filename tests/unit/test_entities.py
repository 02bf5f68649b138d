"""Entity canonicalisation (pure) and offsets into the raw fields (real model, loaded once)."""
import pytest

from worker.core.entities import Entity, canonical_names, clean_name, ner_view, trim_span


def test_surname_maps_to_full_name_of_same_type():
    mentions = [("Vladimir Putin", "PERSON"), ("Putin", "PERSON"), ("Putin's", "PERSON"), ("Russia", "GPE")]
    assert canonical_names(mentions) == ["Vladimir Putin", "Vladimir Putin", "Vladimir Putin", "Russia"]


def test_a_surname_two_people_share_maps_to_the_one_the_article_names_most():
    mentions = [("Jeb Bush", "PERSON")] * 5 + [("George W. Bush", "PERSON"), ("Bush", "PERSON")]
    assert canonical_names(mentions)[-1] == "Jeb Bush"
    mentions = [("Barack Obama", "PERSON"), ("Michelle Obama", "PERSON"), ("Obama", "PERSON")]
    assert canonical_names(mentions)[-1] == "Barack Obama"  # as often named: the first seen


def test_prefix_maps_to_longer_name_but_not_across_types():
    mentions = [("Xi", "PERSON"), ("Xi Jinping", "PERSON"), ("Harbin", "ORG"), ("Harbin Institute", "GPE")]
    assert canonical_names(mentions) == ["Xi Jinping", "Xi Jinping", "Harbin", "Harbin Institute"]


def test_a_name_maps_to_the_end_of_its_chain_of_longer_forms():
    """"Kim" fits "Kim Jong" (named most) and "Kim Jong" fits "Kim Jong Un": all three are one person."""
    mentions = [("Kim Jong Un", "PERSON"), ("Kim Jong", "PERSON"), ("Kim Jong", "PERSON"), ("Kim", "PERSON")]
    assert canonical_names(mentions) == ["Kim Jong Un"] * 4


def test_numeric_types_are_not_merged():
    assert canonical_names([("May", "DATE"), ("May 16", "DATE")]) == ["May", "May 16"]


def test_capitals_collapse_to_the_cased_form():
    assert canonical_names([("KREMLIN", "ORG"), ("Kremlin", "ORG")]) == ["Kremlin", "Kremlin"]


def test_clean_name_strips_article_possessive_quotes_and_spacing():
    assert clean_name("the  Kremlin\u2019s") == "Kremlin"
    assert clean_name("\u201cHarbin\u201d") == "Harbin"
    assert clean_name("Gillis'") == "Gillis"


def test_a_name_of_punctuation_and_odd_spaces_is_kept_as_it_is():
    """Nothing survives cleaning: the surface is kept, spacing normalised as for every other name."""
    assert canonical_names([("\uff01\u3000\uff01", "ORG"), ("\u200b  \u200b", "PERSON")]) == [
        "\uff01 \uff01", "\u200b \u200b"]


def test_ner_view_keeps_every_offset():
    raw = "\u201cPutin\u2019s\u00a0visit\u201d \u2014 Xi"
    view = ner_view(raw)
    assert len(view) == len(raw) and view == "\"Putin's visit\" - Xi"


def test_trim_span_drops_lowercase_article_and_possessive_only():
    view = "said the U.S. State Department's spokesman; The Hague"
    start, end = trim_span(view, 5, view.index(" spokesman"))
    assert view[start:end] == "U.S. State Department"
    start, end = trim_span(view, view.index("The Hague"), len(view))
    assert view[start:end] == "The Hague"


@pytest.fixture(scope="module")
def extractor():
    from worker.core.entities import EntityExtractor  # the model wheel is a dependency: missing, this fails
    return EntityExtractor(batch_size=4)


def test_offsets_point_into_raw_fields(extractor):
    title = "Putin\u2019s visit to China"
    text = "Russian President Vladimir Putin\u2019s state visit to Beijing was announced.\n\nPutin will meet Xi Jinping."
    [entities] = extractor.extract([(title, text)])
    assert entities, "the model found nothing"
    for e in entities:
        raw = title if e.field == "title" else text
        assert raw[e.start:e.end] == e.text
        assert isinstance(e, Entity) and e.to_dict()["canonical"] == e.canonical
    people = {(e.field, e.text): e.canonical for e in entities if e.label == "PERSON"}
    assert people[("text", "Putin")] == "Vladimir Putin"
    assert people[("title", "Putin")] == "Vladimir Putin"


def test_empty_fields_give_no_entities(extractor):
    assert extractor.extract([("", ""), ("Nothing here", "")]) == [[], []]


def test_relocate_moves_offsets_into_the_copy_and_drops_missing_mentions():
    from worker.core.entities import Entity, relocate

    original = [Entity("Putin", "PERSON", 0, 5, "Vladimir Putin", "text"),
                Entity("Putin", "PERSON", 20, 25, "Vladimir Putin", "text"),
                Entity("Kremlin", "ORG", 30, 37, "Kremlin", "text")]
    copy_text = "MOSCOW - Putin spoke. Later Putin left."
    moved = relocate(original, "", copy_text)
    assert [(e.start, e.end) for e in moved] == [(9, 14), (28, 33)]
    assert all(copy_text[e.start:e.end] == e.text for e in moved)


def test_relocate_finds_a_mention_as_a_whole_word_only():
    from worker.core.entities import Entity, relocate

    text = "WIRE - Iranian officials said Iran would talk."   # the original's offset 23 holds "Iranian" here
    moved = relocate([Entity("Iran", "GPE", 23, 27, "Iran", "text")], "", text)
    assert [(e.start, e.end) for e in moved] == [(30, 34)]


def test_relocate_keeps_a_mention_where_the_copy_holds_it_and_never_inside_another():
    """The k-th mention is not the k-th occurrence when the surface also occurs untagged or inside a longer name."""
    from worker.core.entities import Entity, relocate

    text = "Michael Jordan arrived in Jordan on Monday. Jordan welcomed him."
    original = [Entity("Michael Jordan", "PERSON", 0, 14, "Michael Jordan", "text"),
                Entity("Jordan", "GPE", 26, 32, "Jordan", "text"),
                Entity("Jordan", "GPE", 44, 50, "Jordan", "text")]
    assert [(e.start, e.label) for e in relocate(original, "", text)] == [(0, "PERSON"), (26, "GPE"), (44, "GPE")]
    shifted = "AMMAN (Wire) - " + text  # a dateline in front: every offset moves by 15
    moved = relocate(original, "", shifted)
    assert [(e.start, e.label) for e in moved] == [(15, "PERSON"), (41, "GPE"), (59, "GPE")]
    assert all(shifted[e.start:e.end] == e.text for e in moved)


def test_a_place_or_organisation_inside_a_longer_name_is_another_one():
    assert canonical_names([("Sudan", "GPE")] * 4 + [("South Sudan", "GPE")]) == ["Sudan"] * 4 + ["South Sudan"]
    assert canonical_names([("Virginia", "GPE"), ("West Virginia", "GPE")]) == ["Virginia", "West Virginia"]
    assert canonical_names([("Apple", "ORG"), ("Apple Music", "ORG")]) == ["Apple", "Apple Music"]


def test_a_father_is_not_his_namesake_son():
    mentions = [("Donald Trump", "PERSON"), ("Trump", "PERSON"), ("Donald Trump Jr.", "PERSON"),
                ("Trump Jr.", "PERSON")]
    assert canonical_names(mentions) == ["Donald Trump", "Donald Trump", "Donald Trump Jr.", "Donald Trump Jr."]


def test_dotted_and_undotted_acronyms_are_one_name():
    assert canonical_names([("U.S.", "GPE"), ("US", "GPE"), ("the U.N.", "ORG")]) == ["US", "US", "UN"]
    assert clean_name("U.S. Navy") == "US Navy" and clean_name("St. Louis") == "St. Louis"


def test_bidirectional_and_zero_width_marks_are_not_part_of_a_name():
    assert clean_name("\u202bBiden\u202c") == "Biden" and clean_name("Netanyahu\u200e") == "Netanyahu"
    view = "Benjamin Netanyahu\u200e said"
    assert trim_span(view, 0, 19) == (0, 18)
    assert canonical_names([("Benjamin Netanyahu\u200f", "PERSON"), ("Netanyahu", "PERSON")]) == [
        "Benjamin Netanyahu", "Benjamin Netanyahu"]


def test_relocate_does_not_take_an_old_offset_that_now_falls_inside_another_mention():
    """A 17-character dateline moves "Vladimir Putin" onto the old offset of the later "Putin"."""
    from worker.core.entities import Entity, relocate

    text = "Vladimir Putin and aides. Putin spoke."
    original = [Entity("Vladimir Putin", "PERSON", 0, 14, "Vladimir Putin", "text"),
                Entity("Putin", "PERSON", 26, 31, "Vladimir Putin", "text")]
    copy = "MOSCOW (Wire) -- " + text
    moved = relocate(original, "", copy)
    assert [(e.text, e.start) for e in moved] == [("Vladimir Putin", 17), ("Putin", 43)]
