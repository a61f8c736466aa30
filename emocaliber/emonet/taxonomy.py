"""The 40 EmoNet-Face emotions as the release spells them (``data/guide.json``), their annotation-UI groups,
snake_case aliases (the names of the released EmpathicInsight-Face model heads) and descriptors.

Why one table: ``hq.csv`` keys read ``"<Group>|<Emotion>"``, ``binary.csv`` uses the bare display name (and
spells Helplessness "Hopelessness"), the model heads use snake_case; everything is keyed on the display name
and :func:`canonical` maps every spelling to it. Descriptors are shared by some emotions ("loathing" is
Contempt and Disgust), so :func:`emotions_in_text` returns a set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

PHE, PLE = "Positive High-Energy Emotions", "Positive Low-Energy Emotions"
NHE, NLE = "Negative High-Energy Emotions", "Negative Low-Energy Emotions"
COG, PHY, LL = "Cognitive States and Processes", "Physical and Exhaustive States", "Longing & Lust"
GROUPS = (PHE, PLE, NHE, NLE, COG, PHY, LL)


@dataclass(frozen=True)
class Emotion:
    name: str
    group: str
    descriptors: tuple[str, ...]

    @property
    def snake(self) -> str:
        """The EmpathicInsight-Face head name: lower case, "/" and spaces to "_" ("jealousy_&_envy")."""
        return self.name.lower().replace("/", "_").replace(" ", "_")

    @property
    def hq_key(self) -> str:
        """The key of this emotion in ``hq.csv``'s annotation dictionaries."""
        return f"{self.group}|{self.name}"


_TABLE = [
    ("Amusement", PHE, ("lighthearted fun, amusement, mirth, joviality, laughter, playfulness, silliness, jesting, "
                       "delight")),
    ("Elation", PHE, "happiness, excitement, joy, exhilaration, laughter, jubilation, cheerfulness"),
    ("Pleasure/Ecstasy", PHE, "ecstasy, pleasure, bliss, beatitude"),
    ("Contentment", PLE, ("contentment, relaxation, peacefulness, calmness, satisfaction, ease, serenity, bliss, "
                         "fulfillment, gladness, lightness, tranquility")),
    ("Thankfulness/Gratitude", PLE, "thankfulness, gratitude, appreciation, gratefulness"),
    ("Affection", PLE, "sympathy, compassion, warmth, trust, caring, forgiveness, devotion, tenderness, reverence"),
    ("Infatuation", LL, ("infatuation, having a crush, romantic desire, fondness, butterflies in the stomach, "
                        "adoration")),
    ("Hope/Enthusiasm/Optimism", PHE, ("hope, enthusiasm, optimism, anticipation, courage, encouragement, zeal, "
                                      "fervor, inspiration, determination")),
    ("Triumph", PHE, "triumph, superiority, hubris"),
    ("Pride", PLE, "pride, dignity, self-confidently, honor, self-consciousness"),
    ("Interest", PHE, "interest, fascination, curiosity, need for cognition"),
    ("Awe", PHE, "awe, awestruck, wonder"),
    ("Astonishment/Surprise", PHE, "astonishment, surprise, amazement, shock, startlement"),
    ("Concentration", COG, "concentration, deep focus, engrossment, absorption, attention"),
    ("Contemplation", PLE, ("contemplation, thoughtfulness, pondering, reflection, meditation, brooding, "
                           "pensiveness")),
    ("Relief", PLE, "relief, respite, alleviation, solace, comfort, liberation"),
    ("Longing", LL, ("yearning, longing, pining, wistfulness, nostalgia, craving, desire, benign envy, "
                    "homesickness")),
    ("Teasing", PHE, "teasing, bantering, mocking playfully, ribbing, provoking lightly"),
    ("Impatience and Irritability", NHE, ("impatience, irritability, irritation, restlessness, "
                                         "short-temperedness, exasperation")),
    ("Sexual Lust", LL, "sexual lust, carnal desire, lust, feeling horny, feeling turned on"),
    ("Doubt", NLE, "doubt, distrust, suspicion, skepticism, uncertainty, pessimism"),
    ("Fear", NHE, "fear, terror, dread, apprehension, alarm, horror, panic, nervousness"),
    ("Distress", NHE, "worry, anxiety, unease, anguish, trepidation, concern, upset, pessimism, foreboding"),
    ("Confusion", COG, "confusion, bewilderment, disorientation, perplexity"),
    ("Embarrassment", NLE, ("embarrassment, shyness, mortification, discomfiture, awkwardness, "
                           "self-consciousness")),
    ("Shame", NLE, "shame, guilt, remorse, humiliation, contrition"),
    ("Disappointment", NLE, "disappointment, regret, dismay, letdown, chagrin"),
    ("Sadness", NLE, ("sadness, sorrow, grief, melancholy, dejection, despair, self-pity, sullenness, heartache, "
                     "mournfulness, misery")),
    ("Bitterness", NLE, "resentment, acrimony, bitterness, cynicism, rancor, malicious envy"),
    ("Contempt", NLE, "contempt, disapproval, scorn, disdain, loathing, detestation"),
    ("Disgust", NHE, "disgust, revulsion, repulsion, abhorrence, loathing"),
    ("Anger", NHE, "anger, rage, fury, hate, irascibility, enragement, wrath, annoyance"),
    ("Malevolence/Malice", NHE, ("spite, sadism, malevolence, malice, malicious envy, revenge, desire to harm, "
                                "schadenfreude")),
    ("Sourness", PHY, "sourness, tartness, acidity, acerbity, sharpness"),
    ("Pain", PHY, "physical pain, suffering, torment, ache, agony"),
    ("Helplessness", NLE, "helplessness, hopelessness, powerlessness, desperation, submission"),
    ("Fatigue/Exhaustion", PHY, "fatigue, exhaustion, weariness, lethargy, burnout"),
    ("Emotional Numbness", NLE, ("numbness, detachment, insensitivity, emotional blunting, apathy, existential "
                                "void, boredom, stoicism, indifference")),
    ("Intoxication/Altered States of Consciousness", PHY, ("being drunk, stupor, intoxication, disorientation, "
                                                          "altered perception")),
    ("Jealousy & Envy", NLE, "jealousy, envy, covetousness"),
]

#: The 40 emotions in the release's guide order (the column order of every matrix in this package).
EMOTIONS: tuple[Emotion, ...] = tuple(Emotion(n, g, tuple(d.split(", "))) for n, g, d in _TABLE)
NAMES: tuple[str, ...] = tuple(e.name for e in EMOTIONS)
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}
BY_NAME: dict[str, Emotion] = {e.name: e for e in EMOTIONS}

#: Spellings the release uses besides the display names. ``binary.csv`` writes Helplessness as "Hopelessness"
#: (1,556 judgements; "Helplessness" never occurs there, and hopelessness is its first descriptor after itself).
VARIANTS = {"Hopelessness": "Helplessness"}


@lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for e in EMOTIONS:
        for key in (e.name, e.snake, e.hq_key):
            table[key.lower()] = e.name
    for variant, name in VARIANTS.items():
        table[variant.lower()] = name
    return table


def canonical(name: str) -> str | None:
    """The display name for any release spelling: display name, snake_case head name, ``"Group|Emotion"`` key
    (the group is not checked; only the emotion part decides) or a known variant; case-insensitive. None when
    it is none of the 40."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    hit = _lookup().get(key)
    if hit is None and "|" in key:
        hit = _lookup().get(key.rsplit("|", 1)[1].strip())
    return hit


@lru_cache(maxsize=1)
def _term_pattern() -> tuple[re.Pattern[str], dict[str, frozenset[str]]]:
    terms: dict[str, set[str]] = {}
    for e in EMOTIONS:
        for t in (*e.descriptors, e.name.lower(), *e.name.lower().split("/")):
            terms.setdefault(t.lower(), set()).add(e.name)
    ordered = sorted(terms, key=lambda t: (-len(t), t))  # longest first: "romantic desire" before "desire"
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in ordered) + r")(?![\w-])")
    return pattern, {t: frozenset(v) for t, v in terms.items()}


def emotions_in_text(text: str) -> set[str]:
    """Every emotion a free text names through a descriptor or a display name, one-to-many where the release
    shares a descriptor ("loathing" -> {Contempt, Disgust}). Whole words, longest term first, no overlaps."""
    pattern, terms = _term_pattern()
    found: set[str] = set()
    for m in pattern.finditer(text.lower()):
        found |= terms[m.group(1)]
    return found


# ---------------------------------------------------------------------------------------------------------------
# Maps to small label sets. Emotions without a counterpart are absent from a map.

#: 40 -> FER-7 classes (anger, disgust, fear, happy, sad, surprise; neutral has no source emotion and is the
#: prediction when no mapped emotion is present). The "CORE" mapping of the third-party re-analysis
#: saveli/emonet-readout (arXiv 2610.08162), used there to score FER sets; not LAION's own eval/config.py maps.
TO_FER7: dict[str, str] = {
    "Anger": "angry", "Impatience and Irritability": "angry",
    "Disgust": "disgust",
    "Fear": "fear",
    **dict.fromkeys(("Elation", "Amusement", "Contentment", "Pleasure/Ecstasy", "Triumph", "Pride", "Affection",
                     "Thankfulness/Gratitude", "Hope/Enthusiasm/Optimism", "Relief"), "happy"),
    **dict.fromkeys(("Sadness", "Disappointment", "Helplessness", "Distress"), "sad"),
    "Astonishment/Surprise": "surprise",
}
FER7 = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

#: 40 -> Mikels' eight (the VECBench label set, ``emocaliber.tasks.MIKELS_8``). This project's choice, by the
#: descriptors: each Mikels class takes the emotions whose descriptors name it or a near synonym; emotions
#: that are cognitive or physical states (Concentration, Pain, Fatigue, ...) have no Mikels class.
TO_MIKELS8: dict[str, str] = {
    "Amusement": "amusement", "Teasing": "amusement",
    "Awe": "awe", "Astonishment/Surprise": "awe",
    "Contentment": "contentment", "Relief": "contentment", "Thankfulness/Gratitude": "contentment",
    "Affection": "contentment",
    "Elation": "excitement", "Hope/Enthusiasm/Optimism": "excitement", "Triumph": "excitement",
    "Pleasure/Ecstasy": "excitement",
    "Anger": "anger", "Impatience and Irritability": "anger", "Bitterness": "anger", "Malevolence/Malice": "anger",
    "Sadness": "sadness", "Disappointment": "sadness", "Helplessness": "sadness",
    "Fear": "fear", "Distress": "fear",
    "Disgust": "disgust", "Contempt": "disgust",
}
LABEL_MAPS = {"fer7": TO_FER7, "mikels8": TO_MIKELS8}
