"""Benchmark helpers: timing (CUDA events or host clock), model shapes with random weights, emulated links."""

from droidspeak.bench.link import ThrottledTransfer
from droidspeak.bench.shapes import SHAPES, model_config, random_model
from droidspeak.bench.timing import Timing, environment, measure, synchronize

__all__ = ["SHAPES", "ThrottledTransfer", "Timing", "environment", "measure", "model_config", "random_model", "synchronize"]
