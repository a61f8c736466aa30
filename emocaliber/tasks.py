"""The task registry: every task the project knows, its label list in prompt order, and its group.

Label strings are matched verbatim by the released evaluation, so they keep the released spellings
(``cheerfullness``, ``irritabilty``) and the released candidate order. Later modules (SynthEmo, EmoNet-Face)
add their tasks with :func:`register_task`; nothing else in the project hard-codes a label list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

ID_VSA, ID_VER, OOD_VER = "ID VSA", "ID VER", "OOD VER"
#: Groups in report order. SynthEmo registers its own groups (see ``emocaliber.synthemo``).
GROUPS: list[str] = [ID_VSA, ID_VER, OOD_VER]

#: Mikels' eight emotions in the order the released EmoSet-8 candidates use (positives first).
MIKELS_8 = ("awe", "amusement", "contentment", "excitement", "anger", "sadness", "fear", "disgust")
POLARITY_2 = ("positive", "negative")
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


_REGISTRY: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def register_task(spec: TaskSpec, aliases: tuple[str, ...] = (), *, replace: bool = False) -> TaskSpec:
    """Add a task (and input aliases for it). Re-registering an identical spec is a no-op."""
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec and not replace:
        raise ValueError(f"task {spec.name!r} is already registered with a different spec")
    _REGISTRY[spec.name] = spec
    for alias in aliases:
        _ALIASES[alias] = spec.name
    if spec.group not in GROUPS:
        GROUPS.append(spec.group)
    return spec


def canonical_task_name(name: str) -> str:
    """Map an accepted spelling (``UnbaisedEmo-6``, ``ArtPhoto-8``, any case) to the registered name."""
    if not isinstance(name, str):
        raise KeyError(f"task name must be a string, got {type(name).__name__} {name!r}")
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    if name.lower().startswith("synthemo"):
        import emocaliber.synthemo  # noqa: F401  (registers the SynthEmo tasks on import)
    if name.lower().startswith("emonet"):
        importlib.import_module("emocaliber.emonet.corpus")  # registers the EmoNet-Face verification task
    folded = {k.lower(): k for k in list(_REGISTRY) + list(_ALIASES)}
    key = folded.get(name.strip().lower())
    if key is None:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(_REGISTRY))}")
    return _ALIASES.get(key, key)


def get_task(name: str) -> TaskSpec:
    """The spec of a task by name or alias; ``KeyError`` naming the registered tasks otherwise."""
    return _REGISTRY[canonical_task_name(name)]


def list_tasks(group: str | None = None) -> list[TaskSpec]:
    """Registered tasks (optionally one group's), sorted by name."""
    return [t for _, t in sorted(_REGISTRY.items()) if group is None or t.group == group]


def tasks_by_group() -> dict[str, list[str]]:
    """Group name -> task names, in ``GROUPS`` order; groups without tasks are omitted."""
    out: dict[str, list[str]] = {}
    for g in GROUPS:
        names = [t.name for t in list_tasks(g)]
        if names:
            out[g] = names
    return out


for _spec, _aliases in [
    (TaskSpec("FI-2", POLARITY_2, ID_VSA, "FI", "sentiment"), ()),
    (TaskSpec("WebEmo-2", POLARITY_2, ID_VSA, "WebEmo", "sentiment"), ()),
    (TaskSpec("FI-8", MIKELS_8, ID_VER, "FI"), ()),
    (TaskSpec("EmoSet-8", MIKELS_8, ID_VER, "EmoSet"), ()),
    (TaskSpec("WebEmo-7", WEBEMO_7, ID_VER, "WebEmo"), ()),
    (TaskSpec("WebEmo-25", WEBEMO_25, ID_VER, "WebEmo"), ()),
    (TaskSpec("Abstract-8", MIKELS_8, OOD_VER, "Abstract"), ()),
    (TaskSpec("Artphoto-8", MIKELS_8, OOD_VER, "ArtPhoto"), ("ArtPhoto-8",)),
    (TaskSpec("UnbiasedEmo-6", UNBIASEDEMO_6, OOD_VER, "UnbiasedEmo"), ("UnbaisedEmo-6",)),
]:
    register_task(_spec, _aliases)

#: The nine VECBench tasks, in the released evaluation's TASK_ORDER.
VECBENCH_TASKS = ("Abstract-8", "Artphoto-8", "EmoSet-8", "FI-2", "FI-8", "UnbiasedEmo-6", "WebEmo-2",
                  "WebEmo-7", "WebEmo-25")
