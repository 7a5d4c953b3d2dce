"""A tiny random Llama written as a GGUF file inside a fake installed pip distribution: what the real family's
conversion, loading and training code runs on in CI (the 98 MB SmolLM2 package is never needed there)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from droidspeak.zoo.gguf_base import GgufConfig

PACKAGE = "tiny-gguf-model"
MODULE = "tiny_gguf_model"


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: a byte-level BPE needs every byte as a token."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_tiny_gguf(path: Path, *, layers: int = 3, hidden: int = 32, heads: int = 4, kv_heads: int = 2,
                    ffn: int = 64, seed: int = 0) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_byte_alphabet(), "Ġt", "he", "Ġthe"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(layers)
    writer.add_context_length(4096)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(tokens) - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    weight = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)  # noqa: E731
    ones = lambda n: np.ones(n, np.float32)  # noqa: E731
    head_dim = hidden // heads
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    writer.add_tensor("output_norm.weight", ones(hidden))
    for i in range(layers):
        for name, tensor in (
            ("attn_norm", ones(hidden)),
            ("attn_q", weight(hidden, hidden)),
            ("attn_k", weight(kv_heads * head_dim, hidden)),
            ("attn_v", weight(kv_heads * head_dim, hidden)),
            ("attn_output", weight(hidden, hidden)),
            ("ffn_norm", ones(hidden)),
            ("ffn_gate", weight(ffn, hidden)),
            ("ffn_up", weight(ffn, hidden)),
            ("ffn_down", weight(hidden, ffn)),
        ):
            writer.add_tensor(f"blk.{i}.{name}.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def install_fake_package(site: Path, **shape) -> GgufConfig:
    """A dist-info + the GGUF under ``site`` (put it on sys.path); the GgufConfig that pins it."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{MODULE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 0.1\n")
    (site / MODULE).mkdir()
    path = write_tiny_gguf(site / MODULE / "tiny.gguf", **shape)
    return GgufConfig(package=PACKAGE, version="0.1", file=f"{MODULE}/tiny.gguf",
                      sha256=hashlib.sha256(path.read_bytes()).hexdigest())
