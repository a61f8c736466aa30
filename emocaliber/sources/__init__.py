"""Readers for the six raw datasets behind VECBench; each yields :class:`emocaliber.records.Record` objects.

Every reader gives records the same shape: ``id`` = ``<task>/<relative path in the dataset>``, ``image`` =
``<folder>/<relative path>`` under the output image root, ``candidates`` = the task's labels, ``source`` = the
dataset's name, and provenance in ``meta``. Bad items are counted in a :class:`SkipLog`, never fatal.
"""

from __future__ import annotations

from pathlib import Path

from emocaliber.sources.abstract import AbstractSource
from emocaliber.sources.artphoto import ArtPhotoSource
from emocaliber.sources.common import REASONS, SkipLog, Source
from emocaliber.sources.emoset import EmoSetSource
from emocaliber.sources.fi import FISource
from emocaliber.sources.unbiasedemo import UnbiasedEmoSource
from emocaliber.sources.webemo import WebEmoSource

__all__ = ["REASONS", "AbstractSource", "ArtPhotoSource", "EmoSetSource", "FISource", "SkipLog", "Source",
           "UnbiasedEmoSource", "WebEmoSource", "open_sources"]


def open_sources(
    *,
    fi: str | Path | None = None,
    emoset: str | Path | None = None,
    webemo: str | Path | None = None,
    abstract: str | Path | None = None,
    artphoto: str | Path | None = None,
    unbiasedemo: str | Path | None = None,
    webemo_cache: str | Path | None = None,
    extract_to: str | Path | None = None,
) -> list[Source]:
    """The sources given, in the fixed VECBench order (FI, EmoSet, WebEmo, Abstract, ArtPhoto, UnbiasedEmo)."""
    sources: list[Source] = []
    if fi:
        sources.append(FISource(fi))
    if emoset:
        sources.append(EmoSetSource(emoset))
    if webemo:
        sources.append(WebEmoSource(webemo, cache_dir=webemo_cache))
    if abstract:
        sources.append(AbstractSource(abstract))
    if artphoto:
        sources.append(ArtPhotoSource(artphoto))
    if unbiasedemo:
        sources.append(UnbiasedEmoSource(unbiasedemo, extract_to=extract_to))
    return sources
