"""Activated LoRA (aLoRA) receivers: the adapter applies from its invocation tokens on, so the context's K/V are the
base's own and a base sender's cache serves it exactly, with nothing recomputed.

The reference is peft's own aLoRA forward over context + tail in one go; every plan the engine runs from the base's
cache must give its tail logits (full reuse included), and from another sender's cache recomputing every layer must.
"""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from droidspeak.engine import generate, receiver_prefill, sender_prefill, tail_logits
from droidspeak.engine.loading import load_model
from droidspeak.errors import DroidSpeakError
from droidspeak.reuse import ReusePair
from helpers import random_ids, tiny_model

INVOCATION = [7, 8, 9]
TOLERANCE = 1e-4
PLANS = ("full_prefill", "full_reuse", "recompute:0-5", "recompute:2-4", "recompute:0-1+4-5", "cacheblend:0.5",
         "cacheblend:0.3@2")


@pytest.fixture(scope="module")
def alora(llama_checkpoints, tmp_path_factory):
    """(base path, aLoRA adapter path): an aLoRA on every linear layer with random (non-zero) weights."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"],
                        alora_invocation_tokens=INVOCATION, task_type="CAUSAL_LM", init_lora_weights=False)
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("alora") / "adapter"
    get_peft_model(tiny_model("llama", seed=0), config).save_pretrained(folder)
    return str(llama_checkpoints / "base"), str(folder)


@pytest.fixture(scope="module")
def peft_alora(alora):
    base, adapter = alora
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()


def batch(seed=0):
    """Two contexts of different lengths (padding exercised) and tails that start with the invocation."""
    contexts = random_ids((14, 9), seed=seed)
    tails = [torch.cat([torch.tensor(INVOCATION), t % 7]) for t in random_ids((4, 6), seed=seed + 1)]  # ids < 7
    return contexts, tails


@torch.inference_mode()
def reference(peft_model, contexts, tails) -> list[torch.Tensor]:
    """peft's aLoRA forward over each whole sequence: the tail positions' logits."""
    return [peft_model(input_ids=torch.cat([c, t])[None]).logits[0, -t.numel():] for c, t in zip(contexts, tails)]


def errors(logits, expected, tails) -> float:
    width = logits.shape[1]
    return max(
        float((logits[row, width - t.numel() :] - ref).abs().max()) for row, (t, ref) in enumerate(zip(tails, expected))
    )


@pytest.mark.parametrize("plan", PLANS)
def test_every_plan_from_the_base_cache_is_peft_s_own_alora_forward(alora, peft_alora, plan):
    base, adapter = alora
    pair = ReusePair(sender=load_model(base), receiver=load_model(base, adapter=adapter))
    contexts, tails = batch()
    caches = pair.prefill(contexts, full_sliding=True)
    logits = tail_logits(pair.receiver, pair.prepare(caches, plan), tails)
    assert errors(logits, reference(peft_alora, contexts, tails), tails) < TOLERANCE


def test_the_pipelined_prefill_serves_it_from_the_base_cache_too(alora, peft_alora):
    from droidspeak.engine.pipeline import pipelined_prefill

    base, adapter = alora
    receiver = load_model(base, adapter=adapter)
    contexts, tails = batch()
    caches = sender_prefill(load_model(base), contexts)
    logits = tail_logits(receiver, pipelined_prefill(receiver, caches, "recompute:2-4"), tails)
    assert errors(logits, reference(peft_alora, contexts, tails), tails) < TOLERANCE


def test_the_oracle_can_fail(alora, peft_alora):
    """The same weights merged over the whole sequence (what a plain LoRA receiver would be) are far off, and so
    is full reuse from another sender: the check above is not vacuous."""
    base, adapter = alora
    receiver = load_model(base, adapter=adapter)
    contexts, tails = batch()
    expected = reference(peft_alora, contexts, tails)
    merged = [receiver.model(input_ids=torch.cat([c, t])[None]).logits[0, -t.numel():] for c, t in zip(contexts, tails)]
    assert max(float((m - e).abs().max()) for m, e in zip(merged, expected)) > 100 * TOLERANCE
    other = load_model(base.replace("/base", "/tuned"))
    caches = sender_prefill(other, contexts)
    reused = tail_logits(receiver, receiver_prefill(receiver, caches, "full_reuse"), tails)
    recomputed = tail_logits(receiver, receiver_prefill(receiver, caches, "recompute:0-5"), tails)
    assert errors(reused, expected, tails) > 100 * TOLERANCE
    assert errors(recomputed, expected, tails) < TOLERANCE


def test_greedy_generation_from_the_base_cache_matches_peft(alora, peft_alora):
    base, adapter = alora
    receiver = load_model(base, adapter=adapter)
    contexts, tails = batch(seed=5)
    caches = sender_prefill(load_model(base), contexts)
    ours = generate(receiver, receiver_prefill(receiver, caches, "full_reuse"), tails, max_new_tokens=6)
    for row, (context, tail) in enumerate(zip(contexts, tails)):
        ids = torch.cat([context, tail])[None]
        theirs = peft_alora.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                     do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
        assert torch.equal(ours[row], theirs[: ours[row].numel()])


def test_a_tail_without_its_invocation_or_with_a_second_one_is_refused(alora):
    base, adapter = alora
    receiver = load_model(base, adapter=adapter)
    contexts, tails = batch()
    prefilled = receiver_prefill(receiver, contexts, "full_prefill")
    with pytest.raises(DroidSpeakError, match=r"activated LoRA.*starts with \[1, 2, 3\]"):
        tail_logits(receiver, prefilled, [torch.tensor([1, 2, 3, 4]), tails[1]])
    twice = torch.cat([tails[0], torch.tensor(INVOCATION)])
    with pytest.raises(DroidSpeakError, match="repeats it at tail token 7"):
        generate(receiver, prefilled, [tails[0], twice], max_new_tokens=2)


@pytest.mark.slow
def test_the_lm_eval_backend_scores_an_alora_from_the_base_cache_as_peft_does(alora, peft_alora):
    """Each prompt splits at its last delimiter; the query after it starts with the invocation (w7 w8 w9)."""
    pytest.importorskip("lm_eval")
    from droidspeak.lmeval.backend import DroidSpeakLM

    base, adapter = alora
    lm = DroidSpeakLM(receiver=base, receiver_adapter=adapter, sender=base, plan="full_reuse")
    context, continuation = "w1 w2 w3 w4 w5 w6 w10 w11\n\nw7 w8 w9 w5", " w6 w3"
    (ours, _), = lm._loglikelihood_tokens(
        [((context, continuation), lm.tok_encode(context), lm.tok_encode(continuation))], disable_tqdm=True)
    whole = torch.tensor(lm.tok_encode(context + continuation))[None]
    with torch.inference_mode():
        logprobs = peft_alora(input_ids=whole).logits[0, :-1].log_softmax(-1)
    theirs = float(logprobs[-2:].gather(-1, whole[0, -2:, None]).sum())
    assert abs(ours - theirs) < 1e-4 and lm.summary().invocation == tuple(INVOCATION)
    wrong = "w1 w2 w3 w4\n\nw5 w7 w8 w9"
    with pytest.raises(DroidSpeakError, match="activated LoRA"):
        lm._loglikelihood_tokens([((wrong, " w6"), lm.tok_encode(wrong), lm.tok_encode(" w6"))], disable_tqdm=True)


def test_an_activated_lora_is_an_extension_and_needs_its_invocation(tmp_path):
    from omegaconf import OmegaConf

    import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
    from droidspeak.zoo.builder import FamilyBuilder
    from droidspeak.zoo.recipe import zoo_config
    from helpers import compose_config

    mini = OmegaConf.to_container(compose_config("build_zoo", "zoo=mini").zoo)
    alora = {"kind": "alora", "tasks": ["code"], "invocation": "\n\n", "examples_of": "lora-code"}
    cases = [({"variants": {"a": alora}}, "an activated LoRA is an extension"),
             ({"extensions": {"a": {**alora, "invocation": None}}}, "an invocation belongs to"),
             ({"extensions": {"a": {**alora, "examples_of": "nobody"}}}, "examples_of 'nobody'"),
             ({"extensions": {"a": {**alora, "seed": 1}}}, "a seed of its own"),
             ({"extensions": {"a": {**alora, "train_size": [2, 3]}}}, "a train_size of its own")]
    for change, message in cases:
        zoo = zoo_config(OmegaConf.merge(mini, change))
        with pytest.raises(ValueError, match=message):
            FamilyBuilder(zoo, tmp_path, False, print).check()


def test_the_page_counts_exactness_and_compares_with_the_lora_plan(tmp_path):
    import json

    from droidspeak.figures.alora_page import alora_summary, write_alora_page
    from droidspeak.figures.style import FigureDataError

    scores = {("lora", "full_prefill"): [1, 1, 1, 0], ("lora", "full_reuse"): [0, 1, 0, 0],
              ("lora", "recompute"): [1, 1, 0, 0], ("alora", "full_prefill"): [1, 0, 1, 0],
              ("alora", "full_reuse"): [1, 0, 1, 0], ("alora", "recompute"): [1, 0, 1, 0]}
    comparisons = {"base": {"lora": "L<-base", "alora": "A<-base"}}
    rows = [
        {
            "pair": comparisons["base"][kind],
            "method": method,
            "plan": method,
            "quality": sum(s) / 4,
            "per_sample": s,
            "n_samples": 4,
            "recomputed_fraction": {"full_prefill": None, "full_reuse": 0.0, "recompute": 1 / 3}[method],
            "speedup": 2.0,
            "metric": "edit_sim",
            "task": "long_code",
            "split": "test",
        }
        for (kind, method), s in scores.items()
    ]
    summary = alora_summary(rows, comparisons)
    assert summary[0]["alora_reuse_changed_questions"] == 0
    assert summary[0]["alora_reuse_vs_lora_plan"]["delta"] == 0.0
    assert summary[0]["entries"]["lora"][1]["delta"] == pytest.approx(-0.5)
    with pytest.raises(FigureDataError, match="missing"):
        alora_summary(rows[:-1], comparisons)
    (tmp_path / "rows").mkdir()
    provenance = {"key": "k", "source": "sweep", "resolved_plan": "p", "num_layers": 30, "prefill_seconds": 1.0,
                  "baseline_prefill_seconds": 2.0, "eval_seconds": 1.0, "device": "cpu", "dtype": "float32",
                  "git_sha": "abc", "time": "t"}  # what every row written through new_row carries
    (tmp_path / "rows" / "results.jsonl").write_text(
        "".join(json.dumps({**provenance, **r, "key": f"k{i}"}) + "\n" for i, r in enumerate(rows)))
    curve = [[50, 0.5, 1.0], [60, 0.1, 2.0]]
    recipe = {"tasks": ["long_code"], "rank": 8, "alpha": 16, "steps": 60, "lr": 1e-3, "batch_size": 1,
              "invocation": "\n\n# Complete"}
    (tmp_path / "training.json").write_text(json.dumps({
        "lora": {"name": "lora-code", "recipe": recipe, "curve": curve},
        "alora": {"name": "alora-code", "recipe": recipe, "curve": curve, "invocation_tokens": [198, 198],
                  "oracle": {"contexts": 1, "context_tokens": [9], "max_abs_logit_error": 1e-5,
                             "merged_max_abs_logit_difference": 3.0, "max_abs_logit": 20.0}}}))
    template = Path(__file__).resolve().parents[1] / "conf" / "pages" / "alora.md.j2"
    page = write_alora_page(tmp_path, comparisons, command="make x", tolerance=0.05, template=template).read_text()
    assert "changed the score of 0 of 4 questions" in page and (tmp_path / "fig_alora.png").is_file()


def test_a_point_of_an_extension_is_keyed_by_its_own_recipe():
    from pathlib import Path
    from types import SimpleNamespace

    import droidspeak.sweep.config  # noqa: F401  (registers the evaluate schema)
    from droidspeak.sweep.point import point_identity
    from helpers import compose_config

    family = lambda folder: SimpleNamespace(root=Path("zoo-smollm2-x"), report={  # noqa: E731
        "extensions": {"alora-code": {"folder": folder}}})
    cfg = compose_config("evaluate", "pair=smol_alora_code_from_base", "zoo=smollm2")
    first, second = (
        point_identity(cfg, family("extensions/alora-code-1")),
        point_identity(cfg, family("extensions/alora-code-2")),
    )
    assert first["extensions"] == {"zoo:alora-code": "extensions/alora-code-1"} and first != second
    assert "extensions" not in point_identity(compose_config("evaluate", "pair=smol_code_from_base", "zoo=smollm2"),
                                              family("extensions/alora-code-1"))
