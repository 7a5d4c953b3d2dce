"""The profiler, the output-level proxy and the beyond-the-paper comparisons, on tiny models; the profiling job
end to end on the mini family, resolved by the main job's ``profile:PATH@TOL`` plan."""

from pathlib import Path

import pytest

from droidspeak.engine.plan import parse_plan
from droidspeak.profile import load_profile, resolve_profile_plan, save_profile
from droidspeak.profile.candidates import single_group_plans
from droidspeak.profile.choice import choice_rule
from droidspeak.profile.comparisons import compare_hybrid, compare_multigroup, compare_proxy
from droidspeak.profile.profiler import Profiler, profile_pair, select_profile_rows
from droidspeak.profile.proxy import ProxyScorer, agrees_within, spread_rows
from helpers import qa_rows as rows

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def models(llama_pair):
    return llama_pair


def test_select_profile_rows_keeps_whole_contexts():
    picked = select_profile_rows(rows(3, 2), 2)
    assert [r["id"] for r in picked] == ["c0-0", "c0-1", "c1-0", "c1-1"]
    assert spread_rows(["a", "a", "b", "b", "c"], 3) == [0, 2, 4]


def test_agrees_within_rejects_only_significantly_more_disagreement_than_the_tolerance():
    # 16 positions at a 5% tolerance: P(X >= 1) = 0.56 and P(X >= 2) = 0.19 pass; P(X >= 3) = 0.043 fails at 0.05
    assert agrees_within(1.0, 16, 0.05) and agrees_within(15 / 16, 16, 0.05) and agrees_within(14 / 16, 16, 0.05)
    assert not agrees_within(13 / 16, 16, 0.05)
    assert agrees_within(13 / 16, 16, 0.05, alpha=0.01)  # a stricter test rejects less
    assert not agrees_within(0.9, 200, 0.05)  # 20 of 200 is clearly above 5%


def test_self_reuse_profile_is_flat_and_round_trips(models, tmp_path):
    """sender = receiver: every plan answers exactly like full prefill; the profile saves, loads and resolves."""
    base, _ = models
    profiler = Profiler(base, base, "mdqa", rows())
    profile = profile_pair(profiler, receiver_name="base", sender_name="base", granularity=2, progress=False)
    assert profile.num_layers == 6 and len(profile.single_layer) == 6 and profile.transitions
    assert {p.plan for p in profile.points} >= {"full_reuse", "recompute:0-1", "recompute:2-5", "full_prefill"}
    reference = profiler.results["full_prefill"].answers
    for name, ev in profiler.results.items():
        assert ev.answers == reference, name
        assert ev.seconds > 0 and 0 <= ev.compute_fraction <= 1
    path = save_profile(tmp_path / "p.json", profile)
    assert load_profile(path).choose(0.05) == "full_reuse"
    identity = base.fingerprint.identity
    assert str(resolve_profile_plan(f"profile:{path}@0.05", 6, receiver=identity, sender=identity).plan) == "full_reuse"


def test_the_coarse_to_fine_search_scores_its_plans_as_the_exhaustive_one_does(models):
    base, tuned = models
    exhaustive = profile_pair(Profiler(tuned, base, "mdqa", rows()), receiver_name="t", sender_name="b",
                              granularity=1, progress=False, transitions=False)
    staged = profile_pair(Profiler(tuned, base, "mdqa", rows()), receiver_name="t", sender_name="b", granularity=1,
                          progress=False, transitions=False, search="coarse_to_fine", coarse_granularity=2,
                          rule=choice_rule("point"), tolerance=0.05)
    everything = {p.plan: p.quality for p in exhaustive.points}
    assert {p.plan: p.quality for p in staged.points}.items() <= everything.items()
    assert set(single_group_plans(6, 2)) <= {p.plan for p in staged.points}  # the coarse stage, whole
    assert staged.extra["search"] == {"kind": "coarse_to_fine", "group_plans": len(staged.points),
                                      "coarse_granularity": 2, "rule": "point", "tolerance": 0.05}
    assert len(staged.single_layer) == 6 and exhaustive.extra["search"]["kind"] == "exhaustive"


def test_proxy_and_comparisons(models):
    sender, receiver = models
    profiler = Profiler(receiver, sender, "mdqa", rows())
    profile = profile_pair(profiler, receiver_name="tuned", sender_name="base", granularity=2, progress=False)
    proxy = ProxyScorer(receiver, sender, "mdqa", rows(), samples=3)
    assert len(proxy.index) == 3 and len(proxy.caches) == 2  # the sender prefills only the sampled contexts
    own = proxy.score("full_prefill")
    assert own.kl == pytest.approx(0, abs=1e-6) and own.top1 == 1.0
    assert proxy.score("full_reuse").kl > 1e-4
    report = compare_proxy(profiler, profile, proxy, tolerance=0.05, search_repeats=3)  # groups share passes
    one_by_one = ProxyScorer(receiver, sender, "mdqa", rows(), samples=3)
    for point in profile.points:
        alone, shared = one_by_one.score(point.plan), proxy.results[point.plan]
        assert (alone.kl, alone.top1) == (shared.kl, shared.top1), point.plan
    assert report["plans"] == len(profile.points) and report["search_repeats"] == 3
    assert report["task_seconds"] > profiler.sender_seconds
    # each search's cost on the proxy's 3 samples, timed 3 times: a median inside its range, a ratio inside the
    # ratios the two ranges allow (each rounded: to 1 ms, the ratio to 0.01)
    for field in ("proxy_seconds", "task_seconds_equal_samples", "cost_ratio_equal_samples"):
        low, high = report[f"{field}_range"]
        assert 0 < low <= report[field] <= high, field
    (proxy_low, proxy_high), (task_low, task_high) = report["proxy_seconds_range"], report[
        "task_seconds_equal_samples_range"]
    ratio_low, ratio_high = report["cost_ratio_equal_samples_range"]
    assert task_low / (proxy_high + 5e-4) - 0.01 <= ratio_low <= ratio_high <= task_high / (proxy_low - 5e-4) + 0.01
    assert report["equal_samples_plan"] in {p.plan for p in profile.points} | {"full_prefill"}
    assert isinstance(report["equal_samples_within_tolerance"], bool)
    assert report["proxy_plan"] in {p.plan for p in profile.points} | {"full_prefill"}
    assert report["budgets"] == len({p.recomputed_layers for p in profile.points})
    assert report["budget_regret_max"] >= report["budget_regret_mean"] >= 0  # vs the best task quality per budget
    assert 2 <= report["budgets_same_quality"] <= report["budgets"]  # 0 and L layers: one plan each
    multi = compare_multigroup(profiler, profile, max_groups=2)
    assert multi and all(r["plan"] in profiler.results for r in multi)
    hybrid = compare_hybrid(profiler, profile, [2 / 3])  # 4 layers: group of 2 + tokens
    by_method = {r["method"]: r for r in hybrid}
    assert set(by_method) == {"group", "cacheblend", "hybrid"}
    assert by_method["group"]["compute_fraction"] == pytest.approx(2 / 3, abs=1e-3)
    assert by_method["hybrid"]["compute_fraction"] == pytest.approx(2 / 3, abs=0.05)


@pytest.mark.parametrize("plans_per_batch,drafts", [(1, False), (3, False), (1, True), (3, True)])
def test_evaluate_many_scores_every_plan_as_evaluate_does(models, plans_per_batch, drafts):
    """Plans scored together from shared passes (in batches smaller than the rows), their answers decoded one plan
    or three plans at a time, with the receiver's own answers checked first as drafts or not, answer exactly as each
    plan scored alone, and each is charged a positive share of the passes."""
    sender, receiver = models
    plans = ["full_reuse", "recompute:0-1", "recompute:0-3", "recompute:2-3", "recompute:2-5", "recompute:0-0+2-5",
             "full_prefill", "cacheblend:0.5"]
    profiler = Profiler(receiver, sender, "mdqa", rows(3), batch_size=4, plans_per_batch=plans_per_batch,
                        drafts=drafts)
    together = profiler.evaluate_many(plans)
    assert profiler.answered == 6 * len(rows(3))  # the six layer plans'
    assert profiler.decoded <= profiler.answered if drafts else profiler.decoded == profiler.answered
    alone = Profiler(receiver, sender, "mdqa", rows(3), batch_size=4)
    for plan, ev in zip(plans, together, strict=True):
        reference = alone.evaluate(plan)
        assert ev.name == plan and ev.answers == reference.answers and ev.per_input == reference.per_input, plan
        assert ev.compute_fraction == pytest.approx(reference.compute_fraction), plan
        assert ev.seconds >= ev.prefill_seconds > 0 or plan == "full_reuse", plan


def test_a_draft_stands_only_where_it_is_the_greedy_answer(models):
    """A plan that answers as the receiver does (the sender is the receiver) takes every draft without decoding; a
    draft with a wrong token, or cut short of where generation stops, is decoded instead, to the same answers."""
    import torch

    from droidspeak.engine.answers import answer_tokens
    from droidspeak.engine.batch import select_rows
    from droidspeak.engine.prefill import receiver_prefill

    base, _ = models
    profiler = Profiler(base, base, "mdqa", rows(2), drafts=True)
    profiler.evaluate_many(["full_reuse", "recompute:2-3"])
    assert profiler.decoded == 0 and profiler.answered == 2 * len(rows(2))
    reference = profiler.results["full_prefill"].tokens
    contexts = [profiler.caches[c] for c in dict.fromkeys(r["context_id"] for r in profiler.rows.rows)]
    index = [0 if r["context_id"] == profiler.rows.rows[0]["context_id"] else 1 for r in profiler.rows.rows]
    prefilled = select_rows(receiver_prefill(base, contexts, "full_reuse"), index)
    wrong = [torch.cat([(t[:1] + 1) % base.config.vocab_size, t[1:]]) for t in reference]
    short = [t[:-1] for t in reference]
    for drafts in (wrong, short):
        tokens, decoded = answer_tokens(base, profiler.rows, 0, prefilled, drafts=drafts)
        assert decoded == len(reference) and all(torch.equal(a, b) for a, b in zip(tokens, reference))


def test_a_context_is_prefilled_once_however_small_the_batches(models, monkeypatch):
    """Batches of one question (a sliding-window model's) read each context's prefill once, not once a question, and
    answer as evaluate() does."""
    from droidspeak.profile import profiler as profiler_mod

    sender, receiver = models
    calls = {"passes": 0, "prefills": 0}
    shared, prefill = profiler_mod.shared_prefills, profiler_mod.receiver_prefill

    def counted_passes(*args, **kwargs):
        calls["passes"] += 1
        yield from shared(*args, **kwargs)

    def counted_prefill(*args, **kwargs):
        calls["prefills"] += 1
        return prefill(*args, **kwargs)

    monkeypatch.setattr(profiler_mod, "shared_prefills", counted_passes)
    monkeypatch.setattr(profiler_mod, "receiver_prefill", counted_prefill)
    plans = ["full_reuse", "recompute:0-1", "recompute:2-5", "full_prefill"]
    one_by_one = Profiler(receiver, sender, "mdqa", rows(3, questions=3), batch_size=1)
    together = one_by_one.evaluate_many(plans)
    assert calls == {"passes": 3, "prefills": 3}  # the shared passes and full_prefill: once a context each
    alone = Profiler(receiver, sender, "mdqa", rows(3, questions=3), batch_size=1)
    for plan, ev in zip(plans, together, strict=True):
        assert ev.answers == alone.evaluate(plan).answers and len(ev.answers) == 9, plan


@pytest.mark.slow
def test_profile_job_on_the_mini_family_feeds_the_profile_plan(mini_family, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    import droidspeak.sweep.config  # noqa: F401
    from droidspeak.sweep.profile_job import run_job
    from droidspeak.zoo.recipe import recipe_hash

    mini, family = mini_family
    monkeypatch.setenv("DROIDSPEAK_CACHE", str(family.root.parent))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "profile",
            overrides=[
                "zoo=mini",
                "contexts=1",
                "granularity=2",
                "comparisons=false",
                "progress=false",
                f"output_root={tmp_path}",
            ],
        )
        assert recipe_hash(cfg.zoo) == recipe_hash(mini)  # the job's zoo=mini is the session's family
        written = run_job(cfg, family)
        profile = load_profile(written["profile"])
        assert written["profile"] == tmp_path / "profiles" / "ft-mdqa_from_base" / "mdqa.json"
        assert profile.pair == "ft-mdqa<-base" and profile.n_samples == 2 and written["results"].exists()
        # the same job again, same code: the profile is up to date and not measured again; another setting or
        # force=true measures it again
        stamp = written["profile"].stat().st_mtime_ns
        assert run_job(cfg, family) == written and written["profile"].stat().st_mtime_ns == stamp
        again = compose("profile", overrides=["zoo=mini", "contexts=1", "granularity=2", "comparisons=false",
                                              "progress=false", f"output_root={tmp_path}", "force=true"])
        run_job(again, family)
        assert written["profile"].stat().st_mtime_ns != stamp
        job = load_profile(written["profile"]).extra["job"]
        assert job["contexts"] == 1 and job["drafts"] is False  # how its answers were decoded is recorded
        main = compose("evaluate", overrides=["zoo=mini", "method=profile", f"method.path={written['profile']}",
                                              "method.tolerance=0.1"])
    receiver, sender = (family.load(name).fingerprint.identity for name in ("ft-mdqa", "base"))
    plan = resolve_profile_plan(parse_plan(main.method.plan), profile.num_layers, receiver=receiver, sender=sender).plan
    assert str(plan) == profile.choose(0.1)


def test_a_pair_with_an_allowed_mismatch_profiles_and_scores_its_proxy_with_the_warning(models):
    """allow_mismatch reaches every model-running part of a profiling job, not just the profiler."""
    from droidspeak.engine.loading import from_module
    from droidspeak.errors import PairMismatchError
    from helpers import fine_tune_of, tiny_model

    base, _ = models
    theta = tiny_model("llama", seed=0, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    other = from_module(fine_tune_of(theta, seed=1), base.tokenizer, name="theta-1e6")
    with pytest.raises(PairMismatchError, match="allow_mismatch=rope"):
        ProxyScorer(other, base, "mdqa", rows(), samples=2)
    profiler = Profiler(other, base, "mdqa", rows(), allow_mismatch=["rope"])
    assert profiler.warnings and "RoPE" in profiler.warnings[0]
    proxy = ProxyScorer(other, base, "mdqa", rows(), samples=2, allow_mismatch=["rope"])
    assert proxy.score("full_prefill").top1 == 1.0
