"""The task registry, pinned against VECBench as released with EmoCaliber (arXiv 2512.15528;
github.com/wdqqdw/EmoCaliber, huggingface.co/datasets/wudq/VECBench) and WebEmo's label hierarchy.

Label strings and their order are what the released evaluation matches, so every list is written out here.
"""

from __future__ import annotations

import pytest

from emocaliber import tasks as T

MIKELS = ["awe", "amusement", "contentment", "excitement", "anger", "sadness", "fear", "disgust"]
WEBEMO_25 = ["affection", "cheerfullness", "confusion", "contentment", "disappointment", "disgust", "enthrallment",
             "envy", "exasperation", "gratitude", "horror", "irritabilty", "lust", "neglect", "nervousness",
             "optimism", "pride", "rage", "relief", "sadness", "shame", "suffering", "surprise", "sympathy", "zest"]
# WebEmo's category.txt tuples (Panda et al., ECCV 2018, "Contemplating Visual Emotions"): level-3 -> level-2
# (WebEmo-7; confusion stays confusion) and the 11 positive level-3 labels (surprise included).
WEBEMO_25_TO_7 = {
    "affection": "love", "cheerfullness": "joy", "confusion": "confusion", "contentment": "joy",
    "disappointment": "sadness", "disgust": "anger", "enthrallment": "joy", "envy": "anger", "exasperation": "anger",
    "gratitude": "love", "horror": "fear", "irritabilty": "anger", "lust": "love", "neglect": "sadness",
    "nervousness": "fear", "optimism": "joy", "pride": "joy", "rage": "anger", "relief": "joy", "sadness": "sadness",
    "shame": "sadness", "suffering": "sadness", "surprise": "surprise", "sympathy": "sadness", "zest": "joy",
}
WEBEMO_POSITIVE = {"affection", "cheerfullness", "contentment", "enthrallment", "gratitude", "lust", "optimism",
                   "pride", "relief", "surprise", "zest"}

VECBENCH = {  # name: (labels, group, source, kind)
    "FI-2": (["positive", "negative"], "ID VSA", "FI", "sentiment"),
    "WebEmo-2": (["positive", "negative"], "ID VSA", "WebEmo", "sentiment"),
    "FI-8": (MIKELS, "ID VER", "FI", "emotion"),
    "EmoSet-8": (MIKELS, "ID VER", "EmoSet", "emotion"),
    "WebEmo-7": (["anger", "confusion", "fear", "joy", "love", "sadness", "surprise"], "ID VER", "WebEmo", "emotion"),
    "WebEmo-25": (WEBEMO_25, "ID VER", "WebEmo", "emotion"),
    "Abstract-8": (MIKELS, "OOD VER", "Abstract", "emotion"),
    "Artphoto-8": (MIKELS, "OOD VER", "ArtPhoto", "emotion"),
    "UnbiasedEmo-6": (["anger", "fear", "joy", "love", "sadness", "surprise"], "OOD VER", "UnbiasedEmo", "emotion"),
}


def test_label_constants():
    assert list(T.MIKELS_8) == MIKELS
    assert list(T.POLARITY_2) == ["positive", "negative"]
    assert list(T.WEBEMO_25) == WEBEMO_25
    assert list(T.WEBEMO_7) == ["anger", "confusion", "fear", "joy", "love", "sadness", "surprise"]
    assert list(T.UNBIASEDEMO_6) == ["anger", "fear", "joy", "love", "sadness", "surprise"]


@pytest.mark.parametrize("name", list(VECBENCH))
def test_vecbench_task_specs(name):
    labels, group, source, kind = VECBENCH[name]
    spec = T.get_task(name)
    assert (spec.name, list(spec.labels), spec.group, spec.source, spec.kind) == (name, labels, group, source, kind)
    assert spec.is_sentiment == (kind == "sentiment")


def test_vecbench_task_order_is_the_released_task_order():
    assert T.VECBENCH_TASKS == ("Abstract-8", "Artphoto-8", "EmoSet-8", "FI-2", "FI-8", "UnbiasedEmo-6", "WebEmo-2",
                                "WebEmo-7", "WebEmo-25")


def test_groups():
    assert T.GROUPS[:3] == ("ID VSA", "ID VER", "OOD VER")
    by_group = T.tasks_by_group()
    assert by_group["ID VSA"] == ["FI-2", "WebEmo-2"]
    assert by_group["ID VER"] == ["EmoSet-8", "FI-8", "WebEmo-25", "WebEmo-7"]  # sorted by name
    assert by_group["OOD VER"] == ["Abstract-8", "Artphoto-8", "UnbiasedEmo-6"]
    assert [t.name for t in T.list_tasks("OOD VER")] == ["Abstract-8", "Artphoto-8", "UnbiasedEmo-6"]
    assert {t.name for t in T.list_tasks()} >= set(VECBENCH)


@pytest.mark.parametrize("alias, name", [
    ("UnbaisedEmo-6", "UnbiasedEmo-6"), ("ArtPhoto-8", "Artphoto-8"), ("artphoto-8", "Artphoto-8"),
    (" emoset-8 ", "EmoSet-8"), ("FI-2", "FI-2"), ("WEBEMO-25", "WebEmo-25"), ("unbaisedemo-6", "UnbiasedEmo-6"),
])
def test_aliases_and_case(alias, name):
    assert T.canonical_task_name(alias) == name
    assert T.get_task(alias).name == name


def test_unknown_task_names_the_registered_ones():
    with pytest.raises(KeyError, match="EmoSet-8"):
        T.get_task("EmoSet-9")


def test_hierarchy_maps():
    assert T.MIKELS_TO_POLARITY == {
        "amusement": "positive", "awe": "positive", "contentment": "positive", "excitement": "positive",
        "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative"}
    assert T.WEBEMO_25_TO_7 == WEBEMO_25_TO_7
    assert T.WEBEMO_7_TO_2 == {"anger": "negative", "confusion": "negative", "fear": "negative", "joy": "positive",
                               "love": "positive", "sadness": "negative", "surprise": "positive"}
    assert T.HIERARCHIES == {"mikels8->polarity2": T.MIKELS_TO_POLARITY, "webemo25->webemo7": T.WEBEMO_25_TO_7,
                             "webemo7->polarity2": T.WEBEMO_7_TO_2}


def test_webemo_levels_compose_to_the_source_polarity():
    """25 -> 7 -> 2 must give the level-1 sign of every level-3 label in WebEmo's category.txt."""
    for fine, mid in T.WEBEMO_25_TO_7.items():
        assert T.WEBEMO_7_TO_2[mid] == ("positive" if fine in WEBEMO_POSITIVE else "negative"), fine


def test_hierarchy_maps_cover_their_label_sets():
    assert set(T.MIKELS_TO_POLARITY) == set(MIKELS) and set(T.MIKELS_TO_POLARITY.values()) == {"positive",
                                                                                                  "negative"}
    assert set(T.WEBEMO_25_TO_7) == set(WEBEMO_25) and set(T.WEBEMO_25_TO_7.values()) == set(T.WEBEMO_7)
    assert set(T.WEBEMO_7_TO_2) == set(T.WEBEMO_7)


def test_task_spec_validation():
    with pytest.raises(ValueError, match="duplicate labels"):
        T.TaskSpec("X-2", ("a", "a"), "ID VSA", "X")
    with pytest.raises(ValueError, match="kind"):
        T.TaskSpec("X-2", ("a", "b"), "ID VSA", "X", kind="mood")


def test_task_list_does_not_depend_on_what_was_imported():
    """The registry is a table: a fresh interpreter lists SynthEmo's tasks before anything imports synthemo, and
    asking for one changes nothing."""
    import subprocess
    import sys

    code = ("from emocaliber import tasks as T; before = [t.name for t in T.list_tasks()]; "
            "T.get_task('SynthEmo-8'); import emocaliber.synthemo; "
            "print(len(before), 'SynthEmo-8' in before, before == [t.name for t in T.list_tasks()])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["13", "True", "True"]


def test_synthemo_tasks_are_declared():
    assert T.get_task("synthemo-8").group == "Synth VER"
    assert T.get_task("SynthEmo-2").is_sentiment and T.get_task("SynthEmo-2").group == "Synth VSA"
    assert T.tasks_by_group()["Synth OOD"] == ["SynthEmo-OOD-8"]
    assert T.GROUPS == ("ID VSA", "ID VER", "OOD VER", "Synth VSA", "Synth VER", "Synth OOD", "EmoNet-Face")
