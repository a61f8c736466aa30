"""Command-line value types shared by the scripts, so that a bad value is refused with the same one-line message
(argparse prints it after the option's name) whichever script reads it."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def float_pair(example: str) -> Callable[[str], tuple[float, float]]:
    """Two comma-separated numbers, such as ``example``."""
    def parse(text: str) -> tuple[float, float]:
        try:
            a, b = (float(x) for x in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected two numbers like {example}, got {text!r}") from None
        return a, b

    return parse
