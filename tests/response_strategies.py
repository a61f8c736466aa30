"""Generated model responses, shared by the parser and reward tests.

Responses are built from fragments that matter to a parser (every tag, nested and repeated; candidate words in
any case; numbers of every shape: huge, tiny, negative, NaN, percent, braced; newlines) mixed with random
unicode, so a few thousand examples reach the corner cases that plain random text never would.

Two generators: hypothesis strategies (``RESPONSES``; shrink to a minimal failing response, but cost about a
millisecond each) and :func:`random_responses`, which builds thousands per second from a ``random.Random`` that
seeded by hypothesis (``SEEDS``), for the bulk properties.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

from emocaliber.records import REASONING_PARTS
from emocaliber.tasks import MIKELS_8, POLARITY_2, WEBEMO_25

TAGS = ["think", "answer", "confidence", *REASONING_PARTS]
TAG_TOKENS = [f"<{t}>" for t in TAGS] + [f"</{t}>" for t in TAGS] + ["<ANSWER>", "</Answer>", "<", ">", "</"]
CANDIDATE_LISTS = [list(MIKELS_8), list(POLARITY_2), list(WEBEMO_25), ["love", "self love"], []]
WORDS = [w for labels in CANDIDATE_LISTS for w in labels]
NUMBERS = ["0.85", ".85", "85%", "{0.8}", "1", "1.0", "0", "0.0", "100%", "nan", "inf", "-0.1", "1e-3", "1e309",
           "9" * 400, "0." + "0" * 300 + "1", "0.7-0.8", "high", " 0.8\n", "1_0", "\u0661\u0662", "0.5", "0.99"]
PUNCTUATION = ["\n", " ", "", ".", "!", "{", "}", "%"]
NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(NUMBERS),
)
FRAGMENT = st.one_of(
    st.sampled_from(TAG_TOKENS),
    st.sampled_from(WORDS).map(lambda w: w.upper() if len(w) % 3 == 0 else w),
    NUMBER_TEXT,
    st.text(max_size=12),
    st.sampled_from(PUNCTUATION),
)


@st.composite
def well_formed(draw: st.DrawFn) -> str:
    """A response in the output contract, then perturbed: a fragment inserted, or the text cut short."""
    parts = "".join(f"<{p}>{draw(st.text(max_size=8))}</{p}>" for p in REASONING_PARTS)
    answer = draw(st.sampled_from(WORDS))
    text = f"<think>{parts}</think><answer>{answer}</answer><confidence>{draw(NUMBER_TEXT)}</confidence>"
    cut = draw(st.integers(min_value=0, max_value=len(text)))
    action = draw(st.sampled_from(["keep", "insert", "cut"]))
    if action == "insert":
        return text[:cut] + draw(FRAGMENT) + text[cut:]
    return text[:cut] if action == "cut" else text


RESPONSES = st.one_of(st.lists(FRAGMENT, max_size=14).map("".join), well_formed(), st.text(max_size=40))
#: Blank candidates are left out: both parse modes ignore them, the release would match "" everywhere.
SEEDS = st.integers(min_value=0, max_value=2**64)
CANDIDATES = st.one_of(st.sampled_from(CANDIDATE_LISTS),
                       st.lists(st.text(min_size=1, max_size=6).filter(str.strip), max_size=4))


def _random_text(rng: random.Random) -> str:
    """Mostly ASCII, sometimes any code point (surrogates and private use included)."""
    if rng.random() < 0.5:
        return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(12)))
    return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(8)))


def _random_number(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return rng.choice(NUMBERS)
    if r < 0.8:
        return repr(rng.choice([rng.random(), rng.uniform(-2, 2), rng.random() * 10.0 ** rng.randint(-300, 300), float("nan")]))
    return str(rng.randrange(-(10**30), 10**30))


def _random_fragment(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        return rng.choice(TAG_TOKENS)
    if r < 0.55:
        word = rng.choice(WORDS)
        return rng.choice([word, word.upper(), word.capitalize(), f" {word}."])
    if r < 0.70:
        return _random_number(rng)
    return _random_text(rng) if r < 0.9 else rng.choice(PUNCTUATION)


def random_response(rng: random.Random) -> str:
    """One response: a perturbed well-formed one (40%) or a random string of fragments."""
    if rng.random() < 0.4:
        parts = "".join(f"<{p}>{_random_text(rng)}</{p}>" for p in REASONING_PARTS)
        text = (f"<think>{parts}</think><answer>{rng.choice(WORDS)}</answer>"
                f"<confidence>{_random_number(rng)}</confidence>")
        for _ in range(rng.randrange(3)):
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + (_random_fragment(rng) if rng.random() < 0.7 else "") + text[cut + rng.randrange(4):]
        return text
    return "".join(_random_fragment(rng) for _ in range(rng.randrange(16)))


def random_candidates(rng: random.Random) -> list[str]:
    if rng.random() < 0.8:
        return rng.choice(CANDIDATE_LISTS)
    return [w for w in (_random_text(rng) for _ in range(rng.randrange(5))) if w.strip()]
