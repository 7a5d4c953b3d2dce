"""Model cards (README.md) of the embedded family, written from ``family.json``: what each checkpoint is,
how it was trained (recipe, seed, steps, wall time), its quality on every task and every measured pair it is in."""

from __future__ import annotations

import json
from pathlib import Path

from droidspeak.markdown import table
from droidspeak.zoo.recipe import BASE

RECIPE_NOTES = """\
## What made the difference (recipe notes, measured while building this family)
- **Tied input/output embeddings.** With untied embeddings an 8-layer model (hidden 128) showed no sign of
  copying after 1.6k steps of induction documents (loss ~4.9 of 6.2); tied, the copy circuit appeared at
  ~600 steps (loss 6.2 -> 0.9 by step 900): copying needs the embedding -> unembedding map to be the
  identity, which tying gives every token at once instead of learning it token by token.
- **Single-token keys.** Every name, value, field and identifier is one word of a whitespace WordLevel
  tokenizer, and every lookup is keyed by ONE token (a name is a key in one document only). Facts keyed by
  two tokens ("name attribute value") stayed at ~13% lookup accuracy after 600 more steps.
- **Shuffled pairs from the start.** Phase 1: induction documents (random content words in pairs, "|", then
  an exact copy or, half the time, the pairs shuffled). With exact copies alone the copy loss fell fast
  (1.0 at 900 steps) but the world phase then sat at loss ~2.6 (values not looked up): the model had learnt a
  positional copy. With shuffled pairs mixed in, the same world phase reached ~1.9 within 350 steps.
- **Curriculum.** Phase 2: world documents (a task-shaped context, "|", some of its facts restated in
  shuffled order) with facts growing from few to many, mixed with induction documents. Constant LR after
  warm-up (cosine decay hurt the lookup circuit in earlier exploration).
- **One torch thread.** On a shared 2-core CPU two threads were ~8x slower per step (oversubscription).
- **Distinct fine-tuning tasks** at a high LR (forward lookup, two hops, forward + reverse lookup in a record,
  copying a document's values, copying a signature) drift the variants' context representations apart, so a
  sender's K/V is wrong for the receiver. Every measured pair is reported, including those where reuse is free.
"""


def pair_table(pairs: dict) -> str:
    rows = [
        [
            key,
            p["task"],
            p["receiver"],
            p["sender"],
            p["full_reuse"],
            p["best_group"],
            p["best_group_layers"],
            p["best_group_quality"],
        ]
        for key, p in pairs.items()
    ]
    return "\n".join(
        table(
            [
                "pair (receiver<-sender)",
                "task",
                "receiver",
                "sender",
                "full reuse",
                "smallest group within tol.",
                "layers",
                "its quality",
            ],
            rows,
        )
    )


def _training_log(points: list | None) -> str:
    if not points:
        return ""
    return "Training log (mean loss over the answer tokens since the previous line):\n\n" + "\n".join(table(
        ["step", "loss", "seconds"], [list(p) for p in points])) + "\n"


def model_card(name: str, report: dict) -> str:
    recipe = report["recipe"]
    variant = recipe["variants"].get(name)
    timings = report["timings_s"]
    source = report.get("base_source")
    if variant is None and source:
        what = (f"the foundation model of the family, converted from `{source['file']}` of the pip package "
                f"`{source['package']}` {source['version']} (GGUF sha256 `{source['sha256']}`), dequantized to float32")
        training = {"converted_from": source, "wall_time_s": timings.get("convert_base")}
    elif variant is None:
        what = "the foundation model of the family (pretrained from scratch on the synthetic world)"
        training = {
            "pretrain": recipe["pretrain"],
            "wall_time_s": {k: v for k, v in timings.items() if k.startswith("pretrain")},
        }
    else:
        kind = (
            "LoRA adapter (peft; load with load_model(base, adapter=<this dir>))"
            if variant["kind"] == "lora"
            else "full fine-tune"
        )
        what = f"a {kind} of `base` on task `{variant['tasks'][0]}`"
        training = {"finetune": variant, "wall_time_s": timings.get(f"finetune-{name}")}
    accuracy = report["accuracy"][name]
    tasks = report["tasks"]
    acc_rows = [[t, tasks[t]["analogue"], tasks[t]["metric"], accuracy[t]] for t in accuracy]
    mine = {k: p for k, p in report["phenomenon"].items() if name in (p["receiver_model"], p["sender_model"])}
    parts = [
        f"# droidspeak zoo `{report['name']}` / `{name}`\n",
        f"This checkpoint is {what}. " + (
            ("Pretrained by its authors, unchanged here.\n" if variant is None else
             "Fine-tuned here on CPU for testing KV-cache sharing (DroidSpeak) on invented long-context facts.\n")
            if source else "Synthetic, for testing KV-cache sharing (DroidSpeak) on a laptop; it knows nothing "
            "about the real world.\n"),
        "## Architecture\n",
        "```json\n" + json.dumps(report["architecture"], indent=2) + "\n```\n",
        f"Recipe hash `{report['recipe_hash']}` (code `{report['code_version']}`), data and init seed "
        f"{recipe['seed']}, {report['threads']} torch threads.\n",
        "## Training\n",
        "```json\n" + json.dumps(training, indent=2) + "\n```\n",
        _training_log(report.get("curves", {}).get(f"finetune-{name}")),
        f"## Quality on each task ({recipe['measure']['split']} split, greedy, up to "
        f"{recipe['measure']['max_questions']} questions)\n",
        "\n".join(table(["task", "LongBench analogue", "metric", "score"], acc_rows)) + "\n",
        "## KV-cache reuse pairs this model is in\n",
        (pair_table(mine) if mine else "None measured.") + "\n",
        f"Quality is the task metric in [0, 1]; 'smallest group' is the fewest contiguous recomputed layers "
        f"whose quality is within {recipe['measure']['tolerance']:.0%} of the receiver's (0-based, inclusive).\n",
        RECIPE_NOTES if not source else "",
    ]
    return "\n".join(parts)


def extension_card(report: dict) -> str:
    """The model card of an adapter trained on top of a built family (zoo.family's extension report)."""
    recipe, oracle = report["recipe"], report.get("oracle")
    lines = [f"# {report['name']}", "",
             f"An adapter (kind {recipe['kind']}) of the base of the family `{report['family']}`, trained on "
             f"{', '.join(recipe['tasks'])} on top of it (recipe hash `{report['recipe_hash'][:16]}`).", "",
             "```json", json.dumps(recipe, indent=2, sort_keys=True), "```", ""]
    if report.get("invocation_tokens"):
        lines += [f"Activated from the tokens {report['invocation_tokens']} on (peft's `alora_invocation_tokens`): "
                  "the K/V of everything before them are the base's own.", ""]
    if oracle:
        lines += [f"Served from the base's cache with nothing recomputed, its query logits differ from peft's own "
                  f"aLoRA forward by at most {oracle['max_abs_logit_error']:.1e} ({oracle['contexts']} contexts).", ""]
    lines += [
        "Training log (step, mean loss, seconds): "
        + ", ".join(f"({s}, {loss:.3f}, {t})" for s, loss, t in report["curve"]),
        "",
    ]
    return "\n".join(lines)


def write_cards(root: Path, report: dict) -> None:
    """Every model's README.md, from the family report (and the converted base's config)."""
    report = {**report, "architecture": architecture(root, report)}
    for name, folder in report["models"].items():
        (root / folder / "README.md").write_text(model_card(name, report))


def architecture(root: Path, report: dict) -> dict:
    """The base's shape: the toy's recipe, or the main fields of a converted base's config."""
    if not report.get("base_source"):
        return report["recipe"]["model"]
    config = json.loads((root / "models" / BASE / "config.json").read_text())
    keys = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rope_parameters", "tie_word_embeddings", "vocab_size")
    return {k: config[k] for k in keys if k in config}
