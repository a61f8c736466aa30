"""The task registry: every task the project knows, its label list in prompt order, and its group.

Label strings are matched verbatim by the released evaluation, so they keep the released spellings
(``cheerfullness``, ``irritabilty``) and the released candidate order. Every task, the embedded SynthEmo world's
included, is one row of :data:`TASKS`: the registry is data, the same whatever was imported first, and a new
task is one more row. Nothing else in the project hard-codes a label list.
"""

from __future__ import annotations

from dataclasses import dataclass

ID_VSA, ID_VER, OOD_VER = "ID VSA", "ID VER", "OOD VER"
#: SynthEmo's groups (``emocaliber.synthemo``): its polarity task, its eight emotions, its shifted-style test set.
SYNTH_VSA, SYNTH_VER, SYNTH_OOD = "Synth VSA", "Synth VER", "Synth OOD"
#: EmoNet-Face's yes/no verification items (``emocaliber.emonet.corpus``).
EMONET = "EmoNet-Face"
#: Groups in report order.
GROUPS: tuple[str, ...] = (ID_VSA, ID_VER, OOD_VER, SYNTH_VSA, SYNTH_VER, SYNTH_OOD, EMONET)

#: Mikels' eight emotions in the order the released EmoSet-8 candidates use (positives first).
MIKELS_8 = ("awe", "amusement", "contentment", "excitement", "anger", "sadness", "fear", "disgust")
POLARITY_2 = ("positive", "negative")
YES_NO = ("yes", "no")
#: WebEmo level-3 labels in index order (0-24 in ``train25.txt``), original misspellings kept.
WEBEMO_25 = (
    "affection", "cheerfullness", "confusion", "contentment", "disappointment", "disgust", "enthrallment",
    "envy", "exasperation", "gratitude", "horror", "irritabilty", "lust", "neglect", "nervousness",
    "optimism", "pride", "rage", "relief", "sadness", "shame", "suffering", "surprise", "sympathy", "zest",
)
WEBEMO_7 = ("anger", "confusion", "fear", "joy", "love", "sadness", "surprise")
UNBIASEDEMO_6 = ("anger", "fear", "joy", "love", "sadness", "surprise")

#: Label hierarchies as data. Keys name the map; each maps a fine label to its coarse label.
MIKELS_TO_POLARITY = {
    "amusement": "positive", "awe": "positive", "contentment": "positive", "excitement": "positive",
    "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative",
}
WEBEMO_25_TO_7 = {
    "affection": "love", "cheerfullness": "joy", "confusion": "confusion", "contentment": "joy",
    "disappointment": "sadness", "disgust": "anger", "enthrallment": "joy", "envy": "anger",
    "exasperation": "anger", "gratitude": "love", "horror": "fear", "irritabilty": "anger", "lust": "love",
    "neglect": "sadness", "nervousness": "fear", "optimism": "joy", "pride": "joy", "rage": "anger",
    "relief": "joy", "sadness": "sadness", "shame": "sadness", "suffering": "sadness", "surprise": "surprise",
    "sympathy": "sadness", "zest": "joy",
}
# Level-1 polarity of WebEmo's tuples; surprise is positive and confusion negative in the source.
WEBEMO_7_TO_2 = {
    "anger": "negative", "confusion": "negative", "fear": "negative", "joy": "positive", "love": "positive",
    "sadness": "negative", "surprise": "positive",
}
HIERARCHIES: dict[str, dict[str, str]] = {
    "mikels8->polarity2": MIKELS_TO_POLARITY,
    "webemo25->webemo7": WEBEMO_25_TO_7,
    "webemo7->polarity2": WEBEMO_7_TO_2,
}


KINDS = ("sentiment", "emotion", "verification")


@dataclass(frozen=True)
class TaskSpec:
    """One task: ``labels`` are the candidates in prompt order; ``kind`` is "sentiment", "emotion" or
    "verification" (a yes/no question about one emotion named in the record's ``meta["emotion"]``)."""

    name: str
    labels: tuple[str, ...]
    group: str
    source: str
    kind: str = "emotion"

    @property
    def is_sentiment(self) -> bool:
        return self.kind == "sentiment"

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task {self.name!r}: duplicate labels in {self.labels}")
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")


#: Every task: its spec and the other spellings accepted on input (matched case-insensitively anyway).
TASKS: tuple[tuple[TaskSpec, tuple[str, ...]], ...] = (
    (TaskSpec("FI-2", POLARITY_2, ID_VSA, "FI", "sentiment"), ()),
    (TaskSpec("WebEmo-2", POLARITY_2, ID_VSA, "WebEmo", "sentiment"), ()),
    (TaskSpec("FI-8", MIKELS_8, ID_VER, "FI"), ()),
    (TaskSpec("EmoSet-8", MIKELS_8, ID_VER, "EmoSet"), ()),
    (TaskSpec("WebEmo-7", WEBEMO_7, ID_VER, "WebEmo"), ()),
    (TaskSpec("WebEmo-25", WEBEMO_25, ID_VER, "WebEmo"), ()),
    (TaskSpec("Abstract-8", MIKELS_8, OOD_VER, "Abstract"), ()),
    (TaskSpec("Artphoto-8", MIKELS_8, OOD_VER, "ArtPhoto"), ("ArtPhoto-8",)),
    (TaskSpec("UnbiasedEmo-6", UNBIASEDEMO_6, OOD_VER, "UnbiasedEmo"), ("UnbaisedEmo-6",)),
    # SynthEmo-2 is the polarity of SynthEmo-8's images (as FI-2 of FI-8's); SynthEmo-OOD-8 is test only.
    (TaskSpec("SynthEmo-2", POLARITY_2, SYNTH_VSA, "SynthEmo", "sentiment"), ()),
    (TaskSpec("SynthEmo-8", MIKELS_8, SYNTH_VER, "SynthEmo"), ()),
    (TaskSpec("SynthEmo-OOD-8", MIKELS_8, SYNTH_OOD, "SynthEmo"), ()),
    # One yes/no question per (face, emotion): the emotion is the record's meta["emotion"].
    (TaskSpec("EmoNet-Verify", YES_NO, EMONET, "EmoNet-Face", "verification"), ()),
)
_REGISTRY: dict[str, TaskSpec] = {spec.name: spec for spec, _ in TASKS}
_ALIASES: dict[str, str] = {alias: spec.name for spec, aliases in TASKS for alias in aliases}
_FOLDED: dict[str, str] = {k.lower(): _ALIASES.get(k, k) for k in [*_REGISTRY, *_ALIASES]}
for _spec, _ in TASKS:
    if _spec.group not in GROUPS:
        raise ValueError(f"task {_spec.name!r}: group {_spec.group!r} is not one of GROUPS")
if len({name.lower() for name in _REGISTRY}) != len(TASKS):
    raise ValueError("two tasks share a name (case-insensitively)")


def canonical_task_name(name: str) -> str:
    """Map an accepted spelling (``UnbaisedEmo-6``, ``ArtPhoto-8``, any case) to the registered name."""
    if not isinstance(name, str):
        raise KeyError(f"task name must be a string, got {type(name).__name__} {name!r}")
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    key = _FOLDED.get(name.strip().lower())
    if key is None:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return key


def get_task(name: str) -> TaskSpec:
    """The spec of a task by name or alias; ``KeyError`` naming the registered tasks otherwise."""
    return _REGISTRY[canonical_task_name(name)]


def list_tasks(group: str | None = None) -> list[TaskSpec]:
    """Known tasks (optionally one group's), sorted by name."""
    return [t for _, t in sorted(_REGISTRY.items()) if group is None or t.group == group]


def tasks_by_group() -> dict[str, list[str]]:
    """Group name -> task names, in ``GROUPS`` order; groups without tasks are omitted."""
    out: dict[str, list[str]] = {}
    for g in GROUPS:
        names = [t.name for t in list_tasks(g)]
        if names:
            out[g] = names
    return out


#: The nine VECBench tasks, in the released evaluation's TASK_ORDER.
VECBENCH_TASKS = ("Abstract-8", "Artphoto-8", "EmoSet-8", "FI-2", "FI-8", "UnbiasedEmo-6", "WebEmo-2",
                  "WebEmo-7", "WebEmo-25")
