"""The demo page's settings: a dataclass read from YAML (``serve.yaml`` in this package by default), every field
overridable on the command line as ``--field-name value``.

Why a file and not only options: the examples are a list of generator parameters, which reads better as YAML,
and a deployment keeps its limits in one file under version control.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from emocaliber.synthemo import BASE, EMOTIONS, SHIFTED

DEFAULT_CONFIG = Path(__file__).with_name("serve.yaml")
_EXAMPLE_KEYS = {"primary", "secondary", "w", "style", "seed"}


class ConfigError(ValueError):
    """A settings file or value that cannot be used; the message names the field and what to give."""


@dataclass
class ServeConfig:
    """Everything the page needs; ``serve.yaml`` documents each field."""

    model: str | None = None
    metrics: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    default_task: str = "EmoSet-8"
    max_new_tokens: int = 1024
    temperature: float = 0.0
    constrained: bool = False
    device: str | None = None
    max_upload_mb: float = 20.0
    max_image_pixels: int = 40_000_000
    queue_size: int = 16
    bins: int = 10
    example_size: int = 56
    examples: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        from emocaliber.tasks import get_task

        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, (bool, int, float)) and value is not None:
                wanted = (int, float) if type(default) is float else type(default)
                if not isinstance(value, wanted) or (type(default) is not bool and isinstance(value, bool)):
                    raise ConfigError(f"{f.name} must be a {type(default).__name__}, got {value!r}")
        if not isinstance(self.examples, list):
            raise ConfigError(f"examples must be a list of mappings, got {self.examples!r}")
        checks = [
            (bool(self.model), "model is not set: pass --model <checkpoint directory or hub id>"),
            (0 <= self.port <= 65535, f"port must be in [0, 65535], got {self.port}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (self.max_upload_mb > 0, f"max_upload_mb must be > 0, got {self.max_upload_mb}"),
            (self.max_image_pixels >= 1, f"max_image_pixels must be >= 1, got {self.max_image_pixels}"),
            (self.queue_size >= 1, f"queue_size must be >= 1, got {self.queue_size}"),
            (2 <= self.bins <= 100, f"bins must be in [2, 100], got {self.bins}"),
            (28 <= self.example_size <= 512, f"example_size must be in [28, 512], got {self.example_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:
            get_task(self.default_task)
        except KeyError as e:
            raise ConfigError(f"default_task: {e.args[0]}") from None
        if self.metrics is not None and not Path(self.metrics).is_file():
            raise ConfigError(f"metrics file not found: {self.metrics} (give the metrics.json that `emocaliber "
                              "eval` wrote)")
        for i, ex in enumerate(self.examples):
            _check_example(i, ex)


def _check_example(i: int, ex: Any) -> None:
    where = f"examples[{i}]"
    if not isinstance(ex, dict) or "primary" not in ex or set(ex) - _EXAMPLE_KEYS:
        raise ConfigError(f"{where} must be a mapping with 'primary' and optionally {sorted(_EXAMPLE_KEYS - {'primary'})}"
                          f", got {ex!r}")
    for key in ("primary", "secondary"):
        if ex.get(key) is not None and ex[key] not in EMOTIONS:
            raise ConfigError(f"{where}.{key} must be one of {list(EMOTIONS)}, got {ex[key]!r}")
    w = ex.get("w", 1.0)
    if ex.get("secondary") is not None and not (isinstance(w, (int, float)) and 0.5 <= w < 1):
        raise ConfigError(f"{where}.w must be in [0.5, 1) for a blend, got {w!r}")
    if ex.get("style", BASE) not in (BASE, SHIFTED):
        raise ConfigError(f"{where}.style must be {BASE!r} or {SHIFTED!r}, got {ex.get('style')!r}")
    if not isinstance(ex.get("seed", 0), int) or ex.get("seed", 0) < 0:
        raise ConfigError(f"{where}.seed must be a whole number >= 0, got {ex.get('seed')!r}")


def read_config(path: str | os.PathLike = DEFAULT_CONFIG) -> dict[str, Any]:
    """The fields a YAML file sets (unknown keys are an error naming them)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in fields(ServeConfig)})
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {unknown}; known: {sorted(f.name for f in fields(ServeConfig))}")
    return data


def _option_type(f) -> Any:
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool):
        return None  # BooleanOptionalAction
    if isinstance(default, (int, float)):
        return type(default)
    if f.name == "examples":
        return _yaml_list
    return str


def _yaml_list(text: str) -> list[Any]:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"not valid YAML: {e}") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected a YAML list such as '[{{primary: awe}}]', got {text!r}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` plus one option per :class:`ServeConfig` field; options not given keep the file's value."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML settings file (default: the bundled serve.yaml)")
    helps = {
        "model": "checkpoint directory or hub id (required)",
        "metrics": "metrics.json written by `emocaliber eval` for this model (predictions.jsonl beside it): shows "
                   "what a confidence has meant on that benchmark",
        "host": "address to listen on (127.0.0.1: this machine only)",
        "port": "port to listen on",
        "default_task": "task selected when the page opens",
        "max_new_tokens": "generation budget per answer",
        "temperature": "sampling temperature (0: greedy, the same image gives the same answer)",
        "constrained": "decode under the answer format's grammar (needs xgrammar), for checkpoints that have not "
                       "learned the format",
        "device": "torch device, e.g. cuda:0 (default: the first GPU, else CPU)",
        "max_upload_mb": "largest upload the server accepts, in MB",
        "max_image_pixels": "largest image, in pixels, checked from the file header before decoding",
        "queue_size": "requests that may wait while one generates",
        "bins": "confidence bins of the reliability diagram",
        "example_size": "side of the bundled SynthEmo examples, in pixels",
        "examples": "YAML list of SynthEmo examples, e.g. '[{primary: awe}, {primary: fear, seed: 2}]'",
    }
    bundled = read_config(DEFAULT_CONFIG)
    for f in fields(ServeConfig):
        option = "--" + f.name.replace("_", "-")
        kind = _option_type(f)
        value = bundled.get(f.name)
        shown = "" if value is None or f.name == "examples" else f" (bundled serve.yaml: {value})"
        help_text = helps[f.name] + shown
        if kind is None:
            parser.add_argument(option, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(option, dest=f.name, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The YAML file's settings with the options given on the command line on top, validated."""
    values = read_config(args.config)
    values.update({f.name: getattr(args, f.name) for f in fields(ServeConfig) if getattr(args, f.name) is not None})
    try:
        config = ServeConfig(**values)
    except TypeError as e:
        raise ConfigError(f"{args.config}: {e}") from None
    config.validate()
    return config
