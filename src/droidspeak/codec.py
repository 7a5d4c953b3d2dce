"""Transfer codecs: how a sender cache's K, V and E travel at lower precision, and what they cost in bytes.

The paper moves caches at the model's own precision and leaves bandwidth-adaptation open; its successor (SCD) wins
when the link is short. A codec trades exactness for bytes:

- ``lossless``: the tensors as computed (the reference).
- ``bf16``: a cast to bfloat16 (what a bf16 deployment moves anyway; half of float32).
- ``int8``: asymmetric 8-bit, one (scale, minimum) per channel over all tokens (K and V per head channel, E per
  hidden channel): about a quarter of float32.
- ``int4``: asymmetric 4-bit after KIVI (Liu et al., 2024), groups of 32: K per channel in groups of 32 tokens
  (keys have outlier channels), V and E per token in groups of 32 channels; two values a byte, float16 scale and
  minimum per group: 5 bits a value, about a sixth of float32.

``encode`` returns the parts that travel (what :meth:`Encoded.nbytes` counts); ``decode`` rebuilds the tensor the
receiver computes with, in the original dtype. Roles: ``k`` and ``v`` are [kv_heads, tokens, head_dim], ``e`` is
[tokens, hidden].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from droidspeak.errors import CacheFormatError, CodecError

ROLES = ("k", "v", "e")
_FP16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True)
class Encoded:
    """One tensor as it travels: named parts (data, and scale/minimum for the integer codecs)."""

    parts: dict[str, torch.Tensor]
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.parts.values())


@dataclass(frozen=True)
class Grouping:
    """Which elements share a (scale, minimum): runs of ``group`` along ``dim`` (None: the whole axis)."""

    dim: int
    group: int | None


@dataclass(frozen=True)
class Codec:
    name: str
    bits: int | None = None  # None: a cast (or nothing) instead of integer quantization
    cast: torch.dtype | None = None
    grouping: tuple[tuple[str, Grouping], ...] = ()  # role -> grouping, for the integer codecs

    @property
    def lossless(self) -> bool:
        return self.bits is None and self.cast is None

    @property
    def parts(self) -> tuple[str, ...]:
        """The names of an encoded tensor's parts, in :meth:`encode`'s order."""
        return ("data",) if self.bits is None else ("data", "scale", "min")

    def _grouping(self, role: str) -> Grouping:
        if role not in ROLES:
            raise CodecError(f"unknown tensor role {role!r}; expected one of {ROLES}")
        return dict(self.grouping)[role]

    def encode(self, tensor: torch.Tensor, role: str) -> Encoded:
        shape, dtype = tuple(tensor.shape), tensor.dtype
        if self.lossless:
            return Encoded({"data": tensor}, shape, dtype)
        if self.cast is not None:
            return Encoded({"data": tensor.to(self.cast)}, shape, dtype)
        grouping = self._grouping(role)
        data, scale, low = _quantize(tensor, self.bits, grouping.dim, grouping.group)
        return Encoded({"data": data, "scale": scale, "min": low}, shape, dtype)

    def decode(self, encoded: Encoded, role: str) -> torch.Tensor:
        parts = encoded.parts
        if self.bits is None:
            return parts["data"].to(encoded.dtype)
        grouping = self._grouping(role)
        return _dequantize(parts["data"], parts["scale"], parts["min"], self.bits, grouping.dim, encoded.shape,
                           encoded.dtype)

    def nbytes(self, shape: tuple[int, ...], dtype: torch.dtype, role: str) -> int:
        """Bytes a tensor of ``shape`` occupies once encoded (what :meth:`encode`'s parts hold), without encoding."""
        count = math.prod(shape)
        if self.bits is None:
            return count * (self.cast or dtype).itemsize
        grouping = self._grouping(role)
        length = shape[grouping.dim]
        size = grouping.group or max(1, length)
        size += size % 2 if self.bits == 4 else 0
        runs = (count // length if length else 0) * -(-length // size)
        return runs * (size * self.bits // 8 + 2 * torch.float16.itemsize)

    def cache_nbytes(self, cache) -> int:
        """Bytes of a whole ContextCache's K, V and E once encoded."""
        tensors = [*(("k", k) for k in cache.keys), *(("v", v) for v in cache.values),
                   *(("e", e) for e in cache.hidden.values())]
        return sum(self.nbytes(tuple(t.shape), t.dtype, role) for role, t in tensors)

    def roundtrip(self, tensor: torch.Tensor, role: str) -> tuple[torch.Tensor, int]:
        """What the receiver holds after the link, and the bytes that crossed it."""
        if self.lossless:
            return tensor, tensor.numel() * tensor.element_size()
        encoded = self.encode(tensor, role)
        return self.decode(encoded, role), encoded.nbytes


def _quantize(x: torch.Tensor, bits: int, dim: int, group: int | None):
    """Asymmetric ``bits``-bit codes of ``x``, one float16 (scale, minimum) per group along ``dim``."""
    levels = 2**bits - 1
    runs = _grouped(x.detach().float(), dim, group, even=bits == 4)  # [..., groups, group]
    if runs.numel() and runs.abs().max() > _FP16_MAX:
        raise CodecError(f"values beyond float16's range ({_FP16_MAX:.0f}) cannot be quantized by this codec")
    low = runs.amin(-1, keepdim=True).to(torch.float16)
    scale = ((runs.amax(-1, keepdim=True) - low.float()) / levels).to(torch.float16)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant run: every code 0
    codes = ((runs - low.float()) / scale.float()).round_().clamp_(0, levels).to(torch.uint8)
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return codes, scale, low


def _dequantize(codes, scale, low, bits: int, dim: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if bits == 4:
        codes = torch.stack([codes & 0xF, codes >> 4], dim=-1).flatten(-2)
    runs = codes.float() * scale.float() + low.float()
    moved = list(shape)
    moved.append(moved.pop(dim))  # the grouped axis last, as _grouped left it
    flat = runs.flatten(-2)
    if list(flat.shape[:-1]) != moved[:-1] or not 0 <= flat.shape[-1] - moved[-1] < runs.shape[-1]:
        raise CacheFormatError(f"codes of shape {tuple(codes.shape)} cannot decode to a tensor of shape {shape}")
    flat = flat[..., : moved[-1]]
    return flat.movedim(-1, dim).to(dtype).contiguous()


def _grouped(x: torch.Tensor, dim: int, group: int | None, even: bool) -> torch.Tensor:
    """``x`` with ``dim`` moved last and cut into runs of ``group`` (the last run edge-padded, so no range widens;
    ``even``: runs of even length, for codes packed in pairs)."""
    x = x.movedim(dim, -1)
    length = x.shape[-1]
    size = group or max(1, length)
    size += size % 2 if even else 0
    pad = (-length) % size
    if pad and length:
        x = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], pad)], dim=-1)
    elif pad:
        x = x.new_zeros(*x.shape[:-1], pad)
    return x.unflatten(-1, (-1, size))


_TOKENS_OF = {"k": -2, "v": -2, "e": 0}
CODECS = {
    "lossless": Codec("lossless"),
    "bf16": Codec("bf16", cast=torch.bfloat16),
    "int8": Codec("int8", bits=8, grouping=tuple((role, Grouping(_TOKENS_OF[role], None)) for role in ROLES)),
    "int4": Codec("int4", bits=4, grouping=(("k", Grouping(-2, 32)), ("v", Grouping(-1, 32)), ("e", Grouping(-1, 32)))),
}


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise CodecError(f"unknown transfer codec {name!r}; expected one of {', '.join(CODECS)}")
    return CODECS[name]
