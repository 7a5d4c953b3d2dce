"""No silently wrong answer: each input here once produced a number (or a crash) instead of a clear, early error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import droidspeak.sweep.config  # noqa: F401  (registers the config schemas)
from droidspeak.errors import CacheFormatError, DroidSpeakError
from droidspeak.reuse import ReusePair
from droidspeak.store import DiskStore, MemoryStore, TieredStore
from droidspeak.sweep.config import check_values
from droidspeak.sweep.point import point_identity, resume_keys, settle_method
from droidspeak.track.records import read_results
from droidspeak.track.results import ResultsFileError, append_row
from helpers import compose_config, save_checkpoint, tiny_model
from test_records import OLD_SWEEP_ROW
from test_store import make_cache


# ---- caches: nothing non-finite is served; a malformed header is set aside like any corrupt file ---------------
@pytest.mark.parametrize("where", ["k", "e"])
def test_a_cache_holding_nan_or_inf_is_refused_and_set_aside(tmp_path, where):
    cache = make_cache()
    if where == "k":
        cache.keys[2][0, 3, 1] = float("nan")
    else:
        cache.hidden[3][4, 0] = float("inf")
    disk = DiskStore(tmp_path)
    key = disk.put(cache)  # a checksum proves only that the file is as written
    with pytest.raises(CacheFormatError, match="NaN or Inf"):
        disk.get(key)
    assert not disk.contains(key) and disk.path(key).with_name(disk.path(key).name + ".corrupt").exists()
    disk.put(cache)
    tiered = TieredStore([MemoryStore("cpu", pin=False), disk])
    assert tiered.find(key) is None and tiered.rejected == 1  # read as absent: the caller prefills it again


def _edit_header(path, **changes):
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    for name, value in changes.items():
        if value is None:
            metadata.pop(name)
        else:
            metadata[name] = value
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("changes", [{"meta": '{"sender_name": "tin'}, {"sender": None}, {"num_layers": "four"},
                                     {"checksums": "[1, 2]"},
                                     {"meta": '{"sliding_window": "x", "sliding_layers": [0]}'}])
def test_a_cache_with_a_malformed_header_is_set_aside_and_read_as_absent(tmp_path, changes):
    disk = DiskStore(tmp_path)
    key = disk.put(make_cache())
    _edit_header(disk.path(key), **changes)
    tiered = TieredStore([MemoryStore("cpu", pin=False), disk])
    assert tiered.find(key) is None and tiered.rejected == 1 and not disk.contains(key)
    disk.put(make_cache())
    with pytest.raises(CacheFormatError):
        _edit_header(disk.path(key), **changes)
        DiskStore(tmp_path).get(key)


# ---- the engine: limits before compute, and a non-finite logit stops the point ----------------------------------
def test_a_non_finite_output_stops_generation_and_scoring_with_an_error(llama_pair):
    sender, receiver = llama_pair
    pair = ReusePair(sender, receiver)
    (cache,) = pair.prefill([torch.arange(4, 40)])
    cache.keys[1] = cache.keys[1].clone()
    cache.keys[1][:, 5] = float("nan")  # an in-memory cache that went wrong after it was loaded
    with pytest.raises(DroidSpeakError, match="NaN or Inf"):
        pair.generate([cache], [torch.tensor([7, 8])], "full_reuse", max_new_tokens=3)
    with pytest.raises(DroidSpeakError, match="NaN or Inf"):
        pair.loglikelihood([cache], [torch.tensor([7, 8])], [torch.tensor([9])], "full_reuse")
    assert pair.generate([cache], [torch.tensor([7, 8])], "recompute:0-5", max_new_tokens=3)  # nothing reused: fine


def test_context_tail_and_new_tokens_must_fit_the_models_positions(llama_pair):
    sender, receiver = llama_pair
    pair = ReusePair(sender, receiver)
    limit = receiver.config.max_position_embeddings
    (cache,) = pair.prefill([torch.arange(limit - 10) % 90 + 4])
    with pytest.raises(DroidSpeakError, match=f"need {limit + 2} positions; the model has {limit}"):
        pair.generate([cache], [torch.arange(4, 8)], "full_reuse", max_new_tokens=8)
    with pytest.raises(DroidSpeakError, match="positions"):
        pair.loglikelihood([cache], [torch.arange(4, 10)], [torch.arange(4, 10)], "full_reuse")
    assert pair.generate([cache], [torch.arange(4, 8)], "full_reuse", max_new_tokens=6)  # exactly the limit


# ---- adapters are checked against the model they are merged into ------------------------------------------------
def test_an_adapter_of_another_base_is_refused_before_any_weight_changes(tmp_path):
    from peft import LoraConfig, get_peft_model

    from droidspeak.engine.loading import BASE_RECORD, base_weights_digest, load_model

    def adapter_of(model, folder):
        lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        lora.save_pretrained(folder)
        return str(folder)

    base = save_checkpoint(tiny_model("llama", seed=0), tmp_path / "base")
    fits = adapter_of(tiny_model("llama", seed=0), tmp_path / "fits")
    deeper = adapter_of(tiny_model("llama", seed=0, num_hidden_layers=8), tmp_path / "deeper")
    wider = adapter_of(tiny_model("llama", seed=0, hidden_size=96, intermediate_size=128), tmp_path / "wider")
    assert load_model(base, adapter=fits).fingerprint.adapter
    other = save_checkpoint(tiny_model("llama", seed=1), tmp_path / "other")  # the same shapes, other weights
    (tmp_path / "fits" / BASE_RECORD).write_text(json.dumps({"weights": base_weights_digest(base)}))
    assert load_model(base, adapter=fits).fingerprint.adapter == load_model(base, adapter=fits).fingerprint.adapter
    with pytest.raises(DroidSpeakError, match="was trained on a base with weights"):
        load_model(other, adapter=fits)  # by shape it fits; by the base it records, it does not
    with pytest.raises(DroidSpeakError, match="not trained on this model.*layers.6.self_attn.q_proj is not a module"):
        load_model(base, adapter=deeper)
    with pytest.raises(DroidSpeakError, match="input size 64, the adapter's 96"):
        load_model(base, adapter=wider)


# ---- the lm-eval backend: every model_arg is read, the delimiter is what was meant -------------------------------
def test_an_unknown_model_arg_fails_before_loading_and_names_the_valid_ones():
    from lm_eval.api.registry import get_model

    with pytest.raises(DroidSpeakError, match=r"unknown model_args pln: droidspeak reads receiver, sender.*plan"):
        get_model("droidspeak").create_from_arg_string("receiver=/nonexistent,pln=full_reuse", {"device": "cpu"})


def test_the_delimiter_typed_in_a_shell_is_the_one_meant_and_a_prompt_without_it_is_an_error(llama_checkpoints):
    from lm_eval.api.registry import get_model

    root = str(llama_checkpoints / "tuned")
    typed = get_model("droidspeak").create_from_arg_string(f"receiver={root},context_delimiter=\\n\\n", {})
    assert typed.context_delimiter == "\n\n"
    prompt = "w1 w2 w3\n\nw4 w5"
    assert 0 < typed._shared_tokens(prompt, typed.tok_encode(prompt)) < len(typed.tok_encode(prompt))
    with pytest.raises(DroidSpeakError, match=r"holds no context_delimiter '\\n\\n'.*missing_delimiter=receiver_only"):
        typed._shared_tokens("w1 w2 w3 w4", typed.tok_encode("w1 w2 w3 w4"))
    alone = get_model("droidspeak").create_from_arg_string(f"receiver={root},missing_delimiter=receiver_only", {})
    assert alone._shared_tokens("w1 w2 w3 w4", alone.tok_encode("w1 w2 w3 w4")) == 0


def test_an_lm_eval_request_longer_than_max_length_is_refused_not_cut(llama_checkpoints):
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    root = str(llama_checkpoints / "tuned")
    lm = get_model("droidspeak").create_from_arg_string(f"receiver={root},max_length=24", {})
    long_context = " ".join(f"w{i % 50}" for i in range(40)) + "\n\nw1"
    with pytest.raises(DroidSpeakError, match=r"a log-likelihood request: \d+ prompt tokens \+ 0 to generate exceed "
                                              r"max_length 24"):
        lm._loglikelihood_tokens([((long_context, " w2"), lm.tok_encode(long_context), lm.tok_encode(" w2"))])
    request = Instance("generate_until", {}, ("w1 w2\n\nw3", {"until": ["\n"], "max_gen_toks": 30}), 0)
    with pytest.raises(DroidSpeakError, match=r"a generation request: \d+ prompt tokens \+ 30 to generate"):
        lm.generate_until([request])
    positions = llama_checkpoints / "tuned" / "config.json"
    limit = json.loads(positions.read_text())["max_position_embeddings"]
    with pytest.raises(DroidSpeakError, match=f"max_length={limit + 1} exceeds the receiver's {limit} positions"):
        get_model("droidspeak").create_from_arg_string(f"receiver={root},max_length={limit + 1}", {})


# ---- sweeps: nothing set is ignored, one plan has one key, values are checked when the config is read ------------
@pytest.mark.parametrize("override, says", [
    ("+task.limt=8", r"task.limt: no such setting; task takes name, .*limit.*; did you mean task.limit\?"),
    ("+seeed=1", r"seeed: no such setting; this entry point takes pair, .*seed.*; did you mean seed\?"),
    ("+pair.recever=zoo:base", r"pair.recever: .*did you mean pair.receiver\?"),
])
def test_a_key_no_schema_declares_is_an_error_naming_the_valid_ones(override, says):
    cfg = compose_config("evaluate", "pair=mdqa_from_base", "method=full_prefill", override)
    with pytest.raises(DroidSpeakError, match=says):
        check_values(cfg)


def test_a_misspelt_override_is_refused_before_hydra_composes_with_the_valid_keys(tmp_path):
    from droidspeak.sweep.console import check_overrides

    conf = Path(__file__).resolve().parents[1] / "conf"
    with pytest.raises(DroidSpeakError, match=r"task.limt: no such setting; task takes .*did you mean task.limit\?"):
        check_overrides("evaluate", conf, ["-m", "task.limt=8"])
    with pytest.raises(DroidSpeakError, match=r"timing.repeat: .*did you mean timing.repeats\?"):
        check_overrides("evaluate", conf, ["timing.repeat=3"])
    check_overrides("evaluate", conf, ["-m", "pair=a,b", "+experiment=smollm2_heldout", "task.limit=8",  # all valid
                                       "+method_settings.recompute.layers=0-1", "hydra/launcher=local_parallel",
                                       "hydra.run.dir=x", "~logger", "--cfg", "job"])
    check_overrides("verify_model", conf, ["+gguf=smollm2_135m", "gguf.package=x"])


def test_a_method_field_the_method_does_not_read_is_an_error_and_method_settings_apply_per_method():
    cfg = compose_config("evaluate", "pair=mdqa_from_base", "method=full_reuse", "method.layers=0-3")
    with pytest.raises(DroidSpeakError, match=r"method=full_reuse does not read method.layers.*method_settings."
                                              r"recompute.layers"):
        settle_method(cfg)
    for method, plan in (("full_reuse", "full_reuse"), ("recompute", "recompute:0-3")):
        cfg = compose_config("evaluate", "pair=mdqa_from_base", f"method={method}",
                             "+method_settings.recompute.layers=0-3")
        settle_method(cfg)
        assert cfg.method.plan == plan
    cfg = compose_config("evaluate", "pair=mdqa_from_base", "method=recompute", "+method_settings.recompute.ratio=0.2")
    with pytest.raises(DroidSpeakError, match="method_settings.recompute.ratio: method recompute reads layers"):
        settle_method(cfg)


def test_one_plan_has_one_key_and_rows_keyed_by_the_old_spelling_still_resume():
    canonical = compose_config("evaluate", "pair=mdqa_from_base", "method=recompute", "method.layers=0-1")
    spelled = compose_config("evaluate", "pair=mdqa_from_base", "method=recompute", "method.layers=00-01")
    assert point_identity(canonical, None) == point_identity(spelled, None)
    new, legacy = resume_keys(spelled, None)
    assert new == resume_keys(canonical, None)[0] and legacy != new  # a row written as 00-01 before still resumes


@pytest.mark.parametrize("override, says", [
    ("batch_size=0", "batch_size=0: must be at least 1"),
    ("task.limit=-4", "task.limit=-4"),
    ("timing.repeats=0", "timing.repeats"),
    ("task.split=validation", "split 'validation'"),
    ("dtype=float64", "dtype=float64"),
    ("device=cuda:0" if not torch.cuda.is_available() else "device=tpu", "device="),
])
def test_bad_values_are_refused_when_the_config_is_read(override, says):
    cfg = compose_config("evaluate", "pair=mdqa_from_base", "method=full_prefill", override)
    with pytest.raises(DroidSpeakError, match=says):
        check_values(cfg)


def test_output_folders_that_cannot_be_written_are_refused(tmp_path):
    (tmp_path / "a_file").write_text("")
    for root, says in ((tmp_path / "a_file", "a file, not a folder"), (tmp_path / "a_file" / "x", "is a file")):
        cfg = compose_config("evaluate", "pair=mdqa_from_base", "method=full_prefill", f"output_root={root}")
        with pytest.raises(DroidSpeakError, match=says):
            check_values(cfg)
    check_values(compose_config("evaluate", "pair=mdqa_from_base", "method=full_prefill",
                                f"output_root={tmp_path / 'new' / 'folder'}"))


# ---- results: a line of the wrong shape names its place; unlike rows never share a table ---------------------------
@pytest.mark.parametrize("line, says", [("[1, 2]", "a JSON list, not a row"),
                                        ('{"kind": "eval", "pair": "p"}', "not a result row \\(no key"),
                                        (json.dumps({**OLD_SWEEP_ROW, "quality": "high"}), "quality='high'")])
def test_a_results_line_of_the_wrong_shape_is_an_error_naming_file_and_line(tmp_path, line, says):
    path = tmp_path / "results.jsonl"
    append_row(path, OLD_SWEEP_ROW)
    path.write_text(path.read_text() + line + "\n" + json.dumps({**OLD_SWEEP_ROW, "key": "k9"}) + "\n")
    with pytest.raises(ResultsFileError, match=f"results.jsonl:2: .*{says}"):
        read_results(path)


def test_rows_on_two_question_sets_or_code_versions_never_share_a_table(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, {**OLD_SWEEP_ROW, "method": "full_prefill", "n_samples": 16})
    append_row(path, {**OLD_SWEEP_ROW, "key": "k2", "n_samples": 8})  # the same panel, scored on half the questions
    with pytest.raises(ResultsFileError, match="two question sets .*16 questions.*8 questions.*task.limit"):
        read_results(path)
    path.unlink()
    append_row(path, {**OLD_SWEEP_ROW, "code_version": "0.1.0+aaa"})
    append_row(path, {**OLD_SWEEP_ROW, "key": "k2", "code_version": "0.1.0+bbb"})
    with pytest.raises(ResultsFileError, match="two code versions"):
        read_results(path)
    append_row(path, {**OLD_SWEEP_ROW, "key": "k3", "pair": "another", "code_version": "0.1.0+bbb"})
    path.unlink()
    append_row(path, OLD_SWEEP_ROW)
    append_row(path, {**OLD_SWEEP_ROW, "key": "k3", "pair": "another", "n_samples": 8})  # another table: fine
    assert len(read_results(path)) == 2
