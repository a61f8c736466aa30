"""``emocaliber serve``: a web page to try a checkpoint (Gradio; ``pip install 'emocaliber[serve]'``).

    emocaliber serve --model wudq/EmoCaliber --metrics runs/emocaliber/metrics.json

Loads the model once, draws the bundled SynthEmo examples, and serves the page on 127.0.0.1:7860 (``--host`` /
``--port``). Settings come from ``serve.yaml`` in this package (``--config`` for another file), each overridable
as ``--field-name value``. Bad settings, a missing model or an unusable metrics file end with one line on stderr
and exit code 1 before anything is served.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence

from emocaliber.evaluation import OneLineErrorParser
from emocaliber.serve.config import ConfigError, ServeConfig, add_config_arguments, config_from_args

__all__ = ["ServeConfig", "build_parser", "main"]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=prog or "emocaliber serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"emocaliber serve: error: {e}", file=sys.stderr)
        return 1
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("emocaliber serve: error: the page needs Gradio: pip install 'emocaliber[serve]'", file=sys.stderr)
        return 1
    from emocaliber.inference import EmoCaliber
    from emocaliber.modeling import ModelNotFoundError
    from emocaliber.serve.app import build_app, launch_kwargs
    from emocaliber.serve.calibration import MetricsError, load_calibration
    from emocaliber.serve.examples import write_examples

    try:
        calibration = load_calibration(config.metrics, config.bins) if config.metrics else None
        model = EmoCaliber.from_pretrained(config.model, device=config.device)
    except (MetricsError, ModelNotFoundError, OSError, ValueError) as e:
        print(f"emocaliber serve: error: {e}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="emocaliber-serve-") as tmp:
        examples = write_examples(config.examples, tmp, config.example_size)
        demo = build_app(model, config, calibration, examples)
        print(f"emocaliber serve: {config.model} on http://{config.host}:{config.port}", flush=True)
        try:
            demo.launch(**launch_kwargs(config, [tmp]))
        except OSError as e:  # the port is taken, or the address is not this machine's
            print(f"emocaliber serve: error: cannot listen on {config.host}:{config.port} ({e}); choose another "
                  "--port or --host", file=sys.stderr)
            return 1
    return 0
