"""The page's bundled examples: SynthEmo images drawn by :mod:`emocaliber.synthemo`'s generator at start-up.

Drawn rather than shipped as PNG files: the repository and the wheel carry no binary images, the examples are
always what the current generator draws, and the settings file can change them; drawing five small images takes
milliseconds. The same settings give the same bytes (seeded generator, PNG without metadata).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emocaliber.synthemo import BASE, render_image, save_png


def example_name(ex: dict[str, Any]) -> str:
    """A caption for people: ``awe``, ``anger 60% + fear``, ``contentment (shifted style)``."""
    name = ex["primary"]
    if ex.get("secondary"):
        name = f"{name} {round(100 * ex.get('w', 1.0))}% + {ex['secondary']}"
    if ex.get("style", BASE) != BASE:
        name += f" ({ex['style']} style)"
    return name


def write_examples(examples: list[dict[str, Any]], out_dir: str | os.PathLike, size: int) -> list[tuple[Path, str]]:
    """Draw each example into ``out_dir``; (PNG path, caption) in the given order."""
    out = []
    for i, ex in enumerate(examples):
        mix = {"primary": ex["primary"], "secondary": ex.get("secondary"),
               "w": float(ex.get("w", 1.0)) if ex.get("secondary") else 1.0, "style": ex.get("style", BASE)}
        rng = np.random.default_rng([int(ex.get("seed", 0)), i])
        path = Path(out_dir) / f"synthemo-{i}-{ex['primary']}.png"
        save_png(render_image(mix, size, rng), path)
        out.append((path, example_name(ex)))
    return out
