"""droidspeak: cross-LLM KV-cache sharing (DroidSpeak, arXiv 2411.02820) and the experiment suite that measures it.

Importing the package registers the ``droidspeak`` model with lm-eval (lazily: lm-eval and the backend are only
imported when a run asks for the model).

The core, read bottom-up: ``errors`` (what a user can act on), ``hf_compat`` (the one place that knows the installed
transformers), ``codec`` (lower-precision transfer) → ``engine`` (the model it runs on, recompute plans, context
caches, loading a pair, prefill, inference and answers) → ``transfer`` (what crosses the link for a plan), ``reuse``
(``ReusePair``, the user API); ``store`` (where sender caches live) beside them. Helpers: ``atomic`` (files written
whole), ``hashing`` (file sha256), ``markdown`` (tables), ``stats`` (the bootstrap), ``faults`` (the robustness
campaign's kill points).

Built on it: ``lmeval`` (the lm-eval backend), ``profile`` (choosing plans), ``zoo`` (the model families and tasks),
``bench`` and ``serve`` (speed), ``robustness`` (the bad-input campaign); then ``sweep`` (the Hydra jobs), ``track``
(result rows, the source of truth) and ``figures`` (pages drawn from rows only).
"""

from droidspeak.engine.plan import RecomputePlan, parse_plan

__all__ = ["RecomputePlan", "parse_plan", "ReusePair", "load_model"]
__version__ = "0.1.0"


def __getattr__(name):  # keep `import droidspeak` light: torch/transformers load on first use
    if name == "ReusePair":
        from droidspeak.reuse import ReusePair

        return ReusePair
    if name == "load_model":
        from droidspeak.engine.loading import load_model

        return load_model
    raise AttributeError(f"module 'droidspeak' has no attribute {name!r}")


def _register_lm_eval_backend() -> None:
    try:
        import lm_eval.models  # noqa: F401  (lm-eval's own lazy table first, so "hf" stays resolvable)
        from lm_eval.api.registry import model_registry
    except ImportError:  # lm-eval is optional for engine-only use
        return
    if "droidspeak" not in model_registry:
        model_registry.register("droidspeak", target="droidspeak.lmeval.backend:DroidSpeakLM")


_register_lm_eval_backend()
