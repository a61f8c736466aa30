"""The one image loader: every part of the project (training data, evaluation, corpora, exports, inference) opens
an image through :func:`open_image`, so a file is accepted or refused by the same checks everywhere.

The checks: the file exists and decodes completely (a truncated file fails here, not inside a batch), and its
size is one Qwen2.5-VL's processor takes. A record's image is first resolved inside its dataset root
(:func:`emocaliber.records.resolve_image`), so no path from data escapes that root.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from emocaliber.records import Record

#: Qwen2.5-VL's image processor refuses an image whose long side is 200 times its short side or more
#: ("absolute aspect ratio must be smaller than 200").
MAX_ASPECT_RATIO = 200


class ImageLoadError(ValueError):
    """An image is missing, outside the dataset root, not decodable or of a size the model refuses."""


def image_size_problem(width: int, height: int, pixel_limit: int | None = None) -> str | None:
    """Why Qwen2.5-VL's processor would refuse an image of this size (or it has more than ``pixel_limit``
    pixels), or None. Checked when the image is loaded, because the processor's own error comes from inside a
    batch and would take the batch (and a long run) down with it instead of costing that one item. A server sets
    ``pixel_limit`` well below PIL's own decompression-bomb threshold: the size comes from the file header, so a
    small file that expands to gigabytes of pixels is refused before anything is decoded."""
    if pixel_limit is not None and width * height > pixel_limit:
        return (f"is {width}x{height} = {width * height:,} pixels, more than the limit of {pixel_limit:,}; "
                "downscale it")
    if min(width, height) < 1:
        return f"is {width}x{height} pixels: empty"
    ratio = max(width, height) / min(width, height)
    if ratio >= MAX_ASPECT_RATIO:
        return (f"is {width}x{height} pixels, aspect ratio {ratio:.0f}:1; Qwen2.5-VL takes only images under "
                f"{MAX_ASPECT_RATIO}:1 (crop or pad it)")
    return None


def check_image(image: PILImage, where: str = "the image", pixel_limit: int | None = None) -> PILImage:
    """``image`` as RGB, or :class:`ImageLoadError` when the model would refuse its size."""
    problem = image_size_problem(*image.size, pixel_limit)
    if problem:
        raise ImageLoadError(f"image size not accepted: {where} {problem}")
    return image.convert("RGB")


def open_image(path: str | os.PathLike, hint: str = "", pixel_limit: int | None = None) -> PILImage:
    """The file at ``path`` as an RGB image, fully decoded now; :class:`ImageLoadError` names the path and why.

    ``hint`` is appended to the "not found" message (e.g. "; check --image-root")."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            problem = image_size_problem(*im.size, pixel_limit)  # the header's size: a refused image is not decoded
            image = None if problem else im.convert("RGB")
    except FileNotFoundError:
        raise ImageLoadError(f"image not found: {os.fspath(path)}{hint}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # what PIL raises for bad files
        raise ImageLoadError(f"image could not be decoded: {os.fspath(path)} ({e})") from None
    if image is None:
        raise ImageLoadError(f"image size not accepted: {os.fspath(path)} {problem}")
    return image


def load_record_image(record: Record, image_root: str | os.PathLike) -> PILImage:
    """A record's image (resolved inside ``image_root``) through :func:`open_image`.

    Messages read ``record '<id>': <kind>: <detail>`` so a report can count error rows by kind."""
    from emocaliber.records import RecordError, resolve_image

    try:
        path = resolve_image(image_root, record.image)
    except RecordError as e:
        raise ImageLoadError(f"record {record.id!r}: {e}") from None
    try:
        return open_image(path, hint="; check --image-root")
    except ImageLoadError as e:
        raise ImageLoadError(f"record {record.id!r}: {e}") from None
