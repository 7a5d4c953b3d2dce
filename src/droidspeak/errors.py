"""Errors a user can act on.

Every check that guards the engine raises one of these early, with a message naming the offending value,
so bad input never surfaces as a stack trace from deep inside transformers.
"""


class DroidSpeakError(Exception):
    """Base class of every error this package raises on purpose."""


class PlanError(DroidSpeakError, ValueError):
    """A recompute plan is malformed, out of range or overlapping."""


class PairMismatchError(DroidSpeakError, ValueError):
    """Sender and receiver cannot share KV caches; the message lists every mismatch at once."""


class UnsupportedArchitectureError(DroidSpeakError, NotImplementedError):
    """The engine cannot drive this model's layers one by one; the message says what is missing."""


class CacheMismatchError(DroidSpeakError, ValueError):
    """A context cache was computed by another model, for another context, or lacks what a plan needs."""


class CacheFormatError(DroidSpeakError, ValueError):
    """A cache file is corrupt, truncated, or not a droidspeak cache."""


class CodecError(DroidSpeakError, ValueError):
    """An unknown transfer codec, or values a codec cannot encode."""
