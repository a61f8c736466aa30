"""The 40 EmoNet-Face emotions: spellings, groups, aliases, descriptor parsing and label maps."""

from emocaliber.emonet import taxonomy as tx
from emocaliber.tasks import MIKELS_8

# The EmpathicInsight-Face head names as the release's weight files spell them (model_<name>_best.pth).
EIF_HEADS = tuple("""affection amusement anger astonishment_surprise awe bitterness concentration confusion contemplation
contempt contentment disappointment disgust distress doubt elation embarrassment emotional_numbness
fatigue_exhaustion fear helplessness hope_enthusiasm_optimism impatience_and_irritability infatuation interest
intoxication_altered_states_of_consciousness jealousy_&_envy longing malevolence_malice pain pleasure_ecstasy pride
relief sadness sexual_lust shame sourness teasing thankfulness_gratitude triumph""".replace("\n", " ").split(" "))


def test_forty_unique_names_in_seven_groups_of_the_release_sizes():
    assert len(tx.NAMES) == 40 == len(set(tx.NAMES))
    sizes = {g: sum(e.group == g for e in tx.EMOTIONS) for g in tx.GROUPS}
    assert sizes == {tx.PHE: 9, tx.PLE: 6, tx.NHE: 6, tx.NLE: 10, tx.COG: 2, tx.PHY: 4, tx.LL: 3}


def test_snake_aliases_are_the_model_head_names_and_round_trip():
    assert sorted(e.snake for e in tx.EMOTIONS) == sorted(EIF_HEADS)
    for e in tx.EMOTIONS:
        assert tx.canonical(e.snake) == e.name
        assert tx.canonical(e.hq_key) == e.name
        assert tx.canonical(e.name.upper()) == e.name


def test_release_spellings_and_unknown_names():
    assert tx.canonical("Positive High-Energy Emotions|Triumph") == "Triumph"
    assert tx.canonical("Hopelessness") == "Helplessness"  # binary.csv's spelling
    assert tx.canonical("Extra Dimensions|Arousal") is None
    assert tx.canonical("neutral") is None


def test_descriptors_parse_one_to_many():
    assert tx.emotions_in_text("I see joy and nostalgia") == {"Elation", "Longing"}
    assert tx.emotions_in_text("loathing") == {"Contempt", "Disgust"}
    assert tx.emotions_in_text("pure laughter") == {"Amusement", "Elation"}
    # Longest term first: "romantic desire" is Infatuation, not also Longing's "desire".
    assert tx.emotions_in_text("a romantic desire") == {"Infatuation"}
    assert tx.emotions_in_text("a calm face") == set()  # whole terms only ("calmness" is the descriptor)


def test_label_maps_use_known_names_and_labels():
    assert set(tx.TO_FER7) <= set(tx.NAMES) and set(tx.TO_FER7.values()) <= set(tx.FER7)
    assert set(tx.TO_MIKELS8) <= set(tx.NAMES) and set(tx.TO_MIKELS8.values()) == set(MIKELS_8)
