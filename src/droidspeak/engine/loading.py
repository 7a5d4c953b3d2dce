"""Load a sender/receiver pair, fingerprint each model, and check that they can share KV caches.

A cache is only meaningful for the exact weights that computed it, so every loaded model carries a
fingerprint (name, revision or weights hash, adapter, dtype); cache keys and provenance use its digest.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from droidspeak.engine.arch import DecoderStack, decoder_stack, kv_shape
from droidspeak.errors import DroidSpeakError, PairMismatchError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise DroidSpeakError(f"unknown dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


@dataclass(frozen=True)
class Fingerprint:
    """Identity of the exact weights behind a cache."""

    name: str
    revision: str  # hub commit, or sha256 of the weight files / in-memory parameters
    adapter: str | None
    dtype: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def identity(self) -> dict[str, str | None]:
        """What the weights are, wherever they live: the same family installed in another folder (or on another
        machine) has the same identity, so a profile measured there still applies here; another adapter,
        base or dtype does not."""
        return {"weights": self.revision, "adapter": None if self.adapter is None else self.adapter.rsplit("@", 1)[-1],
                "dtype": self.dtype}


@dataclass
class LoadedModel:
    """A causal LM ready for the engine: the model, its tokenizer (if any) and its fingerprint.

    An activated LoRA (aLoRA) receiver is two sets of weights: ``context``, the base, computes every context token
    (its adapter is not active there, so its context K/V are the base's own), and ``model``, the adapter merged,
    computes each tail, which must start with its ``invocation`` tokens (from where peft's aLoRA applies it)."""

    model: nn.Module
    tokenizer: object | None
    fingerprint: Fingerprint
    context: "LoadedModel | None" = None
    invocation: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.stack: DecoderStack = decoder_stack(self.model)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def context_model(self) -> "LoadedModel":
        """The weights that compute context tokens: the model itself, or an activated LoRA's base."""
        return self.context or self

    def check_tails(self, tails: Sequence[Sequence[int] | torch.Tensor]) -> None:
        """An activated LoRA applies from the LAST occurrence of its invocation on (peft's rule), so a tail is served
        exactly only when it starts with the invocation and holds no second one; anything else is refused."""
        if not self.invocation:
            return
        n = len(self.invocation)
        for row, tail in enumerate(tails):
            ids = [int(t) for t in tail]
            later = find_tokens(ids, self.invocation, start=1)
            if tuple(ids[:n]) != self.invocation or later is not None:
                found = f"repeats it at tail token {later}" if later is not None else f"starts with {ids[:n]}"
                raise DroidSpeakError(
                    f"row {row}: this receiver is an activated LoRA, active from its invocation tokens "
                    f"{list(self.invocation)} on, so every tail (the prompt after the shared context) must start with "
                    f"them exactly once; this one {found}. Put the invocation at the start of the query (e.g. set "
                    "context_delimiter so the shared context ends right before it)")


def find_tokens(ids: Sequence[int], part: Sequence[int], start: int = 0) -> int | None:
    """The first index at or after ``start`` where ``part`` occurs in ``ids``; None when it does not."""
    part = list(part)
    return next((i for i in range(start, len(ids) - len(part) + 1) if list(ids[i:i + len(part)]) == part), None)


def load_model(
    name_or_path: str,
    *,
    adapter: str | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load an HF causal LM (hub id or local directory), optionally merging a peft adapter into it; an activated
    LoRA adapter keeps a copy of the base for the context tokens (``LoadedModel.context``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise DroidSpeakError(f"cannot load model {name_or_path!r}: {err}") from None
    decoder_stack(model)  # fail on an unsupported architecture before spending time on adapters
    invocation = () if adapter is None else adapter_invocation(adapter)
    base = copy.deepcopy(model) if invocation else None
    if adapter is not None:
        check_adapter_base(adapter, name_or_path)
        model = merge_adapter(model, adapter, activated=bool(invocation))
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        tokenizer = None
    model.to(device).eval()
    fingerprint = Fingerprint(
        name=str(name_or_path),
        revision=getattr(model.config, "_commit_hash", None) or weights_digest(name_or_path, base or model),
        adapter=None if adapter is None else f"{adapter}@{weights_digest(adapter, None)}",
        dtype=str(torch_dtype).removeprefix("torch."),
    )
    context = None
    if base is not None:
        context = LoadedModel(base.to(device).eval(), tokenizer, dataclasses.replace(fingerprint, adapter=None))
    return LoadedModel(model, tokenizer, fingerprint, context=context, invocation=invocation)


def adapter_invocation(adapter: str) -> tuple[int, ...]:
    """The invocation tokens of an activated LoRA (aLoRA) adapter directory; () for any other adapter."""
    config = Path(adapter) / "adapter_config.json"
    return tuple(json.loads(config.read_text()).get("alora_invocation_tokens") or ()) if config.is_file() else ()


def merge_adapter(model: nn.Module, adapter: str, *, activated: bool = False) -> nn.Module:
    """Merge a peft (e.g. LoRA) adapter into the base weights, so the engine sees plain layers.

    An activated LoRA (aLoRA) is refused unless ``activated``: merged, it would adapt every context token. With
    ``activated`` its weights are merged as a plain LoRA: the weights an aLoRA applies from its invocation on."""
    from peft import PeftConfig, PeftModel

    invocation = adapter_invocation(adapter)
    if invocation and not activated:
        raise DroidSpeakError(
            f"adapter {adapter!r} is an activated LoRA (aLoRA, invocation tokens {list(invocation)}): it applies only "
            "from its invocation tokens on, so merged weights would be wrong for every context token. Load it with "
            "load_model(base, adapter=...), which computes contexts with the base and tails with the adapter")
    check_adapter(model, adapter)  # before any weight changes
    try:
        config = PeftConfig.from_pretrained(adapter)
        if invocation:
            config.alora_invocation_tokens = None
        return PeftModel.from_pretrained(model, adapter, config=config).merge_and_unload()
    except (OSError, ValueError, NotImplementedError) as err:
        raise DroidSpeakError(f"cannot load adapter {adapter!r}: {err}") from None


BASE_RECORD = "droidspeak_base.json"  # written beside an adapter the zoo trains: the sha256 of its base's weights


def base_weights_digest(folder: str | Path) -> str | None:
    """sha256 of a local model folder's weight files (None for a hub id): what an adapter's base record holds."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin")) if folder.is_dir() else []
    return _files_digest(files, named=False) if files else None


def check_adapter_base(adapter: str, base: str) -> None:
    """Where an adapter records the base it was trained on (the zoo's do), it loads onto that base only."""
    record = Path(adapter) / BASE_RECORD
    if not record.is_file():
        return  # adapters trained elsewhere (the committed reference/ ones among them) say nothing: checked by shape
    expected, found = json.loads(record.read_text()).get("weights"), base_weights_digest(base)
    if expected is not None and found is not None and expected != found:
        raise DroidSpeakError(f"adapter {adapter!r} was trained on a base with weights {str(expected)[:12]}…, not on "
                              f"{base!r} ({found[:12]}…): load it onto the base it was trained on")


def check_adapter(model: nn.Module, adapter: str) -> None:
    """An adapter fits the model it is merged into by what it holds, not by the path it names: every LoRA matrix must
    sit on a module the model has, with that module's input and output sizes (another base's adapter — another layer
    count or width — would otherwise be merged where it fits, with only peft's warning)."""
    from safetensors import safe_open

    weights = Path(adapter) / "adapter_model.safetensors"
    if not weights.is_file():
        return  # peft's own loader says what is missing
    modules = dict(model.named_modules())
    problems = []
    with safe_open(str(weights), framework="pt") as tensors:
        for key in tensors.keys():
            side = "A" if ".lora_A." in key else "B" if ".lora_B." in key else None
            if side is None:
                continue
            name = key.split(f".lora_{side}.")[0].removeprefix("base_model.model.")
            module, shape = modules.get(name), tensors.get_slice(key).get_shape()
            if module is None:
                problems.append(f"{name} is not a module of this model")
                continue
            size = getattr(module, "in_features" if side == "A" else "out_features", None)
            held = shape[1] if side == "A" else shape[0]
            if size is not None and held != size:
                problems.append(f"{name} has {'in' if side == 'A' else 'out'}put size {size}, the adapter's {held}")
    if problems:
        layers = getattr(model.config, "num_hidden_layers", "?")
        raise DroidSpeakError(
            f"adapter {adapter!r} was not trained on this model ({model.config.model_type}, {layers} layers, hidden "
            f"size {getattr(model.config, 'hidden_size', '?')}): {len(problems)} of its LoRA matrices do not fit, e.g. "
            + "; ".join(problems[:3]) + ". Load it onto the base it was trained on")


def from_module(model: nn.Module, tokenizer=None, name: str = "in-memory") -> LoadedModel:
    """Wrap a model built in Python (tests, freshly trained weights); its fingerprint hashes its parameters."""
    model.eval()
    fingerprint = Fingerprint(
        name=name,
        revision=parameters_digest(model),
        adapter=None,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
    )
    return LoadedModel(model, tokenizer, fingerprint)


def parameters_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_digest(path: str, model: nn.Module | None) -> str:
    """sha256 of a local directory's weight files; for a hub id without a commit, of the loaded parameters."""
    folder = Path(path)
    files = (
        sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".json") and p.name != BASE_RECORD)
        if folder.is_dir() else []
    )
    if not files:
        if model is None:
            raise DroidSpeakError(f"cannot fingerprint {path!r}: no weight files found")
        return parameters_digest(model)
    return _files_digest(files, named=True)


def _files_digest(files: Sequence[Path], *, named: bool) -> str:
    """sha256 over ``files`` read in blocks, each preceded by its name when ``named``."""
    digest = hashlib.sha256()
    for file in files:
        if named:
            digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


# ---- compatibility ----------------------------------------------------------------------------------------
def _shape_facts(config) -> dict[str, object]:
    kv_heads, head_dim = kv_shape(config)
    rope = getattr(config, "rope_parameters", None)
    return {
        "architecture": config.model_type,
        "layers": config.num_hidden_layers,
        "hidden size": config.hidden_size,
        "attention heads": config.num_attention_heads,
        "kv heads": kv_heads,
        "head dim": head_dim,
        "RoPE": json.dumps(rope, sort_keys=True, default=str) if rope else None,
        "sliding window": getattr(config, "sliding_window", None),
        "layer types": tuple(getattr(config, "layer_types", None) or ()),
        "vocab size": config.vocab_size,
    }


# Facts a pair may differ in when the user says so (the paper reused caches across them anyway, e.g. MistralLite <-
# Mistral-7B: RoPE theta 1e6 vs 1e4, no sliding window vs 4096): option name -> the shape fact it allows.
ALLOWABLE_MISMATCHES = {"rope": "RoPE", "sliding_window": "sliding window"}


def pair_mismatches(sender: LoadedModel, receiver: LoadedModel) -> dict[str, str]:
    """Every reason the two models cannot share a KV cache, by fact (empty when they can)."""
    ours, theirs = _shape_facts(sender.config), _shape_facts(receiver.config)
    problems = {key: f"{key}: sender {ours[key]} vs receiver {theirs[key]}" for key in ours if ours[key] != theirs[key]}
    if sender.tokenizer is not None and receiver.tokenizer is not None:
        vocab_s, vocab_r = sender.tokenizer.get_vocab(), receiver.tokenizer.get_vocab()
        if vocab_s != vocab_r:
            differing = len(set(vocab_s.items()) ^ set(vocab_r.items()))
            problems["tokenizer"] = (
                f"tokenizer vocabulary: {differing} entries differ (same text would give other token ids)"
            )
    if sender.dtype != receiver.dtype:
        problems["dtype"] = f"dtype: sender {sender.dtype} vs receiver {receiver.dtype}"
    if sender.device != receiver.device:
        problems["device"] = f"device: sender {sender.device} vs receiver {receiver.device}"
    return problems


def check_compatible(sender: LoadedModel, receiver: LoadedModel, allow: Sequence[str] = ()) -> list[str]:
    """Raise one PairMismatchError listing every mismatch, before any compute. ``allow`` names mismatches the user
    accepts (keys of ALLOWABLE_MISMATCHES); each one present comes back as a warning for every result row."""
    unknown = sorted(set(allow) - set(ALLOWABLE_MISMATCHES))
    if unknown:
        raise PairMismatchError(f"allow_mismatch {unknown}: only {sorted(ALLOWABLE_MISMATCHES)} can be allowed")
    allowed = {ALLOWABLE_MISMATCHES[name] for name in allow}
    problems = pair_mismatches(sender, receiver)
    refused = [message for fact, message in problems.items() if fact not in allowed]
    if refused:
        hint = [f"allow_mismatch={name} accepts the {fact} difference" for name, fact in ALLOWABLE_MISMATCHES.items()
                if fact in problems and fact not in allowed]
        raise PairMismatchError(
            f"sender {sender.fingerprint.name!r} and receiver {receiver.fingerprint.name!r} cannot share KV caches "
            "(same architecture and base model required):\n  - " + "\n  - ".join(refused)
            + ("\n(" + "; ".join(hint) + ", as the paper did; every result row then records it)" if hint else "")
        )
    return [f"allowed mismatch, {problems[fact]}" for fact in sorted(allowed) if fact in problems]
