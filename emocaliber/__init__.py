"""EmoCaliber: calibrated visual emotion reasoning with Qwen2.5-VL."""

__version__ = "0.1.0"
