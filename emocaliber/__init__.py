"""EmoCaliber: calibrated visual emotion reasoning with Qwen2.5-VL."""

__version__ = "0.1.0"

#: Exported lazily so ``import emocaliber`` stays light (no torch) until the model API is used.
_LAZY = {"EmoCaliber": "emocaliber.inference", "Prediction": "emocaliber.inference"}
__all__ = ["EmoCaliber", "Prediction", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emocaliber' has no attribute {name!r}")
