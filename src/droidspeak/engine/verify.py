"""Support proven per model: driving its layers one by one must reproduce its own forward, or it is refused.

Why: the engine calls a model's own embedding, rotary embedding and decoder layers (``arch.DecoderStack``), so
most decoder-only families work unchanged (Llama, Mistral, Qwen 2/3, Phi-3, Mixtral, Qwen-MoE, Gemma, Gemma 3
were checked this way). A family that applies something between those parts that the stack does not (an
embedding scale outside the embedding module, an extra norm, a residual multiplier in the model's forward)
would give silently wrong caches. So instead of a list of model types, every model is probed once before a pair
computes anything: a batch of two short contexts of different lengths, then a query, through three plans of
the model reusing its own cache. Each must give the query logits of the model's own forward over context +
query, within its dtype's tolerance, or the error names the plan that differed and by how much.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from droidspeak.engine.infer import tail_logits
from droidspeak.engine.loading import LoadedModel, check_compatible
from droidspeak.engine.prefill import receiver_prefill, sender_prefill
from droidspeak.errors import UnsupportedArchitectureError
from droidspeak.hf_compat import cache_arg, returned_cache

# max |logit difference| / max(1, max |logit|) always allowed, per dtype; in low precision the model's own rounding
# noise (its forward in one go vs through its own cache) sets the bar when it is larger
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
NOISE_FACTOR = 4
PROBE_CONTEXTS, PROBE_QUERY = (12, 7), 4  # batched, so padding is exercised too
_verified: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ProbeResult:
    plan: str
    what: str  # what the plan exercises, for the error message
    error: float | None  # relative logit difference; None when the plan raised
    raised: str | None = None


@dataclass(frozen=True)
class Probe:
    results: list[ProbeResult]
    lengths: tuple[int, ...]  # the contexts' lengths, batched
    noise: float  # the model's own relative difference between its forward in one go and through its own cache
    allowed: float  # the largest error accepted: the dtype's tolerance, or NOISE_FACTOR x noise if larger

    @property
    def failed(self) -> list[ProbeResult]:
        return [r for r in self.results if r.error is None or r.error > self.allowed]


def probe_plans(num_layers: int) -> dict[str, str]:
    """The plans a probe runs, each with what it exercises."""
    middle = num_layers // 2
    return {
        f"recompute:0-{num_layers - 1}": "every layer driven from the embeddings",
        f"recompute:{middle}-{max(middle, num_layers - 2)}": "a mid-network group fed by the model's own E cache",
        "full_reuse": "every layer's K/V reused from the model's own cache",
    }


def _relative(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return float((logits.float() - reference).abs().max()) / max(1.0, float(reference.abs().max()))


@torch.inference_mode()
def probe(model: LoadedModel, lengths: Sequence[int] = PROBE_CONTEXTS) -> Probe:
    """Run the probe on ``model`` (its device and dtype) over contexts of ``lengths`` tokens, batched: every plan's
    relative logit error, and the bar."""
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    if "sliding_attention" in model.stack.layer_types:  # they batch only one length beyond their window
        lengths = (max(lengths),) * len(lengths)  # (engine.infer.check_window)
    contexts = [torch.randint(0, vocab, (n,), generator=generator) for n in lengths]
    queries = [torch.randint(0, vocab, (PROBE_QUERY,), generator=generator) for _ in lengths]
    device, noise, own = model.device, 0.0, []
    for context, query in zip(contexts, queries):
        own.append(
            model.model(input_ids=torch.cat([context, query])[None].to(device)).logits[0, -query.numel() :].float()
        )
        prefix = model.model(input_ids=context[None].to(device), use_cache=True)
        cached = model.model(input_ids=query[None].to(device), **cache_arg(returned_cache(prefix))).logits[0]
        noise = max(noise, _relative(cached, own[-1]))
    allowed = max(TOLERANCE.get(model.dtype, TOLERANCE[torch.bfloat16]), NOISE_FACTOR * noise)
    plans = probe_plans(model.stack.num_layers)
    try:
        caches = sender_prefill(model, contexts, e_layers="all", batch_size=len(contexts))
    except Exception as err:  # noqa: BLE001  (any failure to drive the model is the finding)
        return Probe([ProbeResult(plan, what, None, f"{type(err).__name__}: {err}") for plan, what in plans.items()],
                     tuple(lengths), noise, allowed)
    results = []
    for plan, what in plans.items():
        try:
            logits = tail_logits(model, receiver_prefill(model, caches, plan), queries)
        except Exception as err:  # noqa: BLE001
            results.append(ProbeResult(plan, what, None, f"{type(err).__name__}: {err}"))
            continue
        width = logits.shape[1]
        error = max(_relative(logits[row, width - q.numel():], ref) for row, (q, ref) in enumerate(zip(queries, own)))
        results.append(ProbeResult(plan, what, error))
    return Probe(results, tuple(lengths), noise, allowed)


def verify_model(model: LoadedModel) -> None:
    """Refuse ``model`` unless the engine reproduces its own forward (probed once per weights and device). An
    activated LoRA is probed as its two plain models: the base its contexts run on, and the adapter merged."""
    if model.context is not None:
        for part in (model.context, dataclasses.replace(model, context=None, invocation=())):
            verify_model(part)
        return
    key = (model.fingerprint.digest, str(model.device))
    if key in _verified:
        return
    checked = probe(model)
    if checked.failed:
        lines = [
            f"{r.plan} ({r.what}): "
            + (
                f"raised {r.raised}"
                if r.error is None
                else f"logits off by {r.error:.2e} of their scale (allowed {checked.allowed:.1e})"
            )
            for r in checked.failed
        ]
        raise UnsupportedArchitectureError(
            f"{type(model.model).__name__} ({model.config.model_type}) failed droidspeak's probe: driving its decoder "
            "layers one by one does not reproduce its own forward, so its caches cannot be trusted:\n  - "
            + "\n  - ".join(lines)
            + "\nIts forward applies something between embeddings, layers and norm that "
            "droidspeak.engine.arch.DecoderStack does not; add it there (see README: verifying a new model)."
        )
    _verified.add(key)


def check_pair(sender: LoadedModel, receiver: LoadedModel, allow_mismatch: Sequence[str] = ()) -> list[str]:
    """Everything a pair must pass before any compute: compatible shapes and tokenizers (but for the mismatches
    ``allow_mismatch`` accepts, returned as warnings), and both models probed."""
    warnings = check_compatible(sender, receiver, allow_mismatch)
    for model in (sender,) if receiver is sender else (sender, receiver):
        verify_model(model)
    return warnings
