"""The droidspeak lm-eval backend scores exactly like lm-eval's own `hf` backend when nothing is reused."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")  # its evaluator and task index load on first use, not at collection

import droidspeak  # noqa: E402,F401  (registers the backend)

pytestmark = pytest.mark.slow  # every test runs lm-eval end to end (one starts its CLI)


def words(rng, n):
    return " ".join(f"w{rng.randint(1, 99)}" for _ in range(n))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, llama_checkpoints):
    from lm_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("lmeval")
    receiver, sender = str(llama_checkpoints / "tuned"), str(llama_checkpoints / "base")  # a fine-tune and its base
    rng = random.Random(0)
    rows = []
    for c in range(4):
        context = words(rng, 12) + "\n\n" + words(rng, 20)  # a delimiter inside the context too
        for q in range(3):
            rows.append(
                {
                    "context": context,
                    "question": words(rng, 3),
                    "answer": words(rng, 1),
                    "choices": [words(rng, 1), words(rng, 2)],
                    "label": q % 2,
                }
            )
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = root / "tasks"
    tasks.mkdir()
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tasks / "gen.yaml").write_text(
        "task: ds_gen\n" + common + 'output_type: generate_until\ndoc_to_text: "{{context}}\\n\\n{{question}}"\n'
        'doc_to_target: "{{answer}}"\ngeneration_kwargs:\n  until: ["w7"]\n  max_gen_toks: 4\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    (tasks / "mc.yaml").write_text(
        "task: ds_mc\n" + common + 'output_type: multiple_choice\ndoc_to_text: "{{context}}\\n\\n{{question}}"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n'
    )
    (tasks / "roll.yaml").write_text(
        "task: ds_roll\n"
        + common
        + 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{context}}"\n'
        "metric_list:\n  - metric: word_perplexity\n"
    )
    return receiver, sender, TaskManager(include_path=str(tasks))


def run(setup, model, model_args):
    _, _, tasks = setup
    return lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=["ds_gen", "ds_mc", "ds_roll"], task_manager=tasks,
        log_samples=True, batch_size=4, device="cpu",
    )


def per_sample(results, task):
    return [s["resps"] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


@pytest.fixture(scope="module")
def hf_results(setup):
    receiver, _, _ = setup
    return run(setup, "hf", f"pretrained={receiver},dtype=float32")


def assert_same_scores(ours, reference):
    for task in ("ds_gen", "ds_mc", "ds_roll"):
        for metric, value in reference["results"][task].items():
            if isinstance(value, float) and "stderr" not in metric:
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-6), (task, metric)
    assert per_sample(ours, "ds_gen") == per_sample(reference, "ds_gen")
    for task in ("ds_mc", "ds_roll"):
        for mine, theirs in zip(per_sample(ours, task), per_sample(reference, task)):
            for a, b in zip(mine, theirs):
                a, b = a[0], b[0]
                a_ll = a[0] if isinstance(a, (list, tuple)) else a
                b_ll = b[0] if isinstance(b, (list, tuple)) else b
                assert a_ll == pytest.approx(b_ll, abs=1e-4)


@pytest.mark.parametrize(
    "plan, self_reuse",
    [
        ("full_prefill", False),  # the contract: the receiver alone, scored like lm-eval's hf backend
        ("recompute:0-5", False),  # every layer recomputed from the receiver's embeddings
        ("cacheblend:1.0", False),  # every token recomputed
        ("full_reuse", True),  # the receiver reusing its own cache
    ],
)
def test_plans_that_change_nothing_score_exactly_like_hf(setup, hf_results, plan, self_reuse):
    receiver, sender, _ = setup
    ours = run(setup, "droidspeak", f"receiver={receiver},sender={receiver if self_reuse else sender},plan={plan}")
    assert_same_scores(ours, hf_results)


def test_reuse_from_another_sender_changes_scores_and_shares_caches(setup, hf_results):
    from lm_eval.api.registry import get_model

    receiver, sender, tasks = setup
    lm = get_model("droidspeak")(receiver=receiver, sender=sender, plan="full_reuse", batch_size=4)
    ours = lm_eval.simple_evaluate(model=lm, tasks=["ds_mc"], task_manager=tasks, log_samples=True)
    mine = [choice[0][0] for sample in per_sample(ours, "ds_mc") for choice in sample]
    theirs = [choice[0][0] for sample in per_sample(hf_results, "ds_mc") for choice in sample]
    assert max(abs(a - b) for a, b in zip(mine, theirs)) > 1e-3
    # 4 distinct contexts, 12 questions x 2 choices: each shared context is prefilled by the sender once
    assert lm.stats["sender_prefills"] == 4
    assert lm.stats["sender_cache_hits"] > 0


def test_a_cache_dir_shares_sender_caches_across_receivers(setup, tmp_path):
    from lm_eval.api.registry import get_model

    receiver, sender, tasks = setup
    first = get_model("droidspeak")(receiver=receiver, sender=sender, plan="recompute:2-3", cache_dir=str(tmp_path))
    lm_eval.simple_evaluate(model=first, tasks=["ds_mc"], task_manager=tasks)
    # another receiver (here: the sender's own sibling, the same base) reading the same contexts
    second = get_model("droidspeak")(receiver=sender, sender=sender, plan="recompute:2-3", cache_dir=str(tmp_path))
    lm_eval.simple_evaluate(model=second, tasks=["ds_mc"], task_manager=tasks)
    assert first.stats["sender_prefills"] == 4
    assert second.stats["sender_prefills"] == 0 and second.stats["sender_cache_hits"] > 0


def test_the_droidspeak_eval_cli_takes_lm_evals_own_flags(setup, tmp_path):
    """As a user runs it: lm-eval's CLI flags (its --device defaults to cuda:0; here there is none) + model_args."""
    receiver, sender, tasks = setup
    cli = shutil.which("droidspeak-eval", path=str(Path(sys.executable).parent))
    assert cli, "the droidspeak-eval console script is installed with the package"
    include = tasks.include_path if isinstance(tasks.include_path, str) else tasks.include_path[0]
    done = subprocess.run(
        [
            cli,
            "--model",
            "droidspeak",
            "--model_args",
            f"receiver={receiver},sender={sender},plan=recompute:1-2,batch_size=4",
            "--tasks",
            "ds_mc",
            "--include_path",
            str(include),
            "--output_path",
            str(tmp_path),
            "--batch_size",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ds_mc" in done.stdout and "acc" in done.stdout
    assert list(tmp_path.rglob("results_*.json"))


@pytest.mark.slow
def test_lm_evals_own_wandb_logging_and_a_cache_keyed_by_plan(setup, tmp_path):
    """``--wandb_args`` logs through lm-eval's own W&B logger; ``--use_cache`` entries of one plan never serve
    another."""
    receiver, sender, tasks = setup
    cli = shutil.which("droidspeak-eval", path=str(Path(sys.executable).parent))
    include = tasks.include_path if isinstance(tasks.include_path, str) else tasks.include_path[0]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
    }
    for plan in ("recompute:1-2", "full_reuse"):
        done = subprocess.run(
            [cli, "--model", "droidspeak", "--model_args", f"receiver={receiver},sender={sender},plan={plan}",
             "--tasks", "ds_mc", "--include_path", str(include), "--output_path", str(tmp_path / "out"),
             "--use_cache", str(tmp_path / "cache" / "run"), "--wandb_args", "project=droidspeak-test,job_type=eval"],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(caches) == 2 and all(name.startswith("run-droidspeak-") for name in caches)  # one per plan
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(any(run.glob("*.wandb")) for run in runs)


def test_allow_mismatch_in_model_args_lets_a_rope_pair_run_and_its_summary_records_it(setup, tmp_path):
    from lm_eval.api.registry import get_model

    from droidspeak.errors import PairMismatchError

    receiver, sender, _ = setup
    other = tmp_path / "theta"
    shutil.copytree(sender, other)
    config = json.loads((other / "config.json").read_text())
    config["rope_parameters"] = {**(config.get("rope_parameters") or {"rope_type": "default"}), "rope_theta": 123456.0}
    (other / "config.json").write_text(json.dumps(config))
    backend = get_model("droidspeak")
    with pytest.raises(PairMismatchError, match="allow_mismatch=rope"):
        backend(receiver=receiver, sender=str(other))
    lm = backend(receiver=receiver, sender=str(other), allow_mismatch="rope")
    assert [w for w in lm.summary().warnings if "RoPE" in w and "123456" in w]


def test_a_transfer_codec_sends_fewer_bytes_and_a_bad_one_fails_before_loading(setup):
    from lm_eval.api.registry import get_model

    from droidspeak.errors import CodecError

    receiver, sender, tasks = setup
    sent = {}
    for codec in ("lossless", "int8"):
        lm = get_model("droidspeak")(receiver=receiver, sender=sender, plan="recompute:2-3", batch_size=4,
                                     transfer_codec=codec)
        lm_eval.simple_evaluate(model=lm, tasks=["ds_mc"], task_manager=tasks)
        summary = lm.summary()
        assert summary.codec == codec
        sent[codec] = summary.transfer_bytes
        if codec == "lossless":  # lossless sends exactly what the plan's cost says it loads
            assert summary.transfer_bytes == summary.cost.bytes_to_load
    assert 0.25 < sent["int8"] / sent["lossless"] < 0.35  # 4x smaller, plus a scale and minimum per channel
    with pytest.raises(CodecError, match="unknown transfer codec"):
        get_model("droidspeak")(receiver="/nonexistent", transfer_codec="fp8")


def test_a_context_read_by_consecutive_batches_is_prefilled_once(setup):
    from lm_eval.api.registry import get_model

    receiver, sender, tasks = setup
    lm = get_model("droidspeak")(receiver=receiver, sender=sender, plan="recompute:2-3", batch_size=1)
    ours = lm_eval.simple_evaluate(model=lm, tasks=["ds_gen"], task_manager=tasks, log_samples=True)
    contexts = {sample["doc"]["context"] for sample in ours["samples"]["ds_gen"]}
    assert len(lm.stats["costs"]) == len(contexts) < len(ours["samples"]["ds_gen"])  # one question a batch
