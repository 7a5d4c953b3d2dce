"""One evaluated point: (pair, task, plan) → lm-eval metrics, prefill cost and timing → one results row.

Model references are ``zoo:NAME`` (the embedded family, built or reused from its cache) or an HF id / local path.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

from droidspeak.bench.answer_path import CONTEXT_PREFILL, time_plans
from droidspeak.engine.plan import RecomputePlan, format_plan, parse_plan
from droidspeak.errors import DroidSpeakError
from droidspeak.hashing import file_sha256
from droidspeak.lmeval.task_yaml import LONGBENCH, embedded_task_name, write_embedded_tasks
from droidspeak.track.records import ResultRow, new_row, question_set_digest
from droidspeak.track.results import point_key
from droidspeak.zoo.family import family_root
from droidspeak.zoo.tasks import DEV, TASKS, WIDE_TEST

ZOO_PREFIX = "zoo:"
# What each method reads besides name, plan and codec: any other method field set is a mistake, not a no-op.
METHOD_FIELDS = {"full_prefill": (), "full_reuse": (), "sender": (), "recompute": ("layers",),
                 "cacheblend": ("ratio", "check_layer", "compute_of"),
                 "profile": ("path", "tolerance", "allow_foreign_profile")}
_UNSET = {"layers": None, "ratio": None, "check_layer": None, "compute_of": None, "path": None, "tolerance": None,
          "allow_foreign_profile": False}


def settle_method(cfg) -> str | None:
    """Apply ``method_settings`` for the method that runs; then a method field it does not read is an error (e.g.
    ``method=full_reuse method.layers=0-3``), naming where such a field belongs. Returns why the point cannot run
    (a CacheBlend at equal compute that no ratio reaches), else None."""
    name = cfg.method.name
    if name not in METHOD_FIELDS:
        raise DroidSpeakError(f"method={name}: one of {', '.join(METHOD_FIELDS)}")
    for method, settings in cfg.method_settings.items():
        if method not in METHOD_FIELDS:
            raise DroidSpeakError(f"method_settings.{method}: no such method; one of {', '.join(METHOD_FIELDS)}")
        stray = sorted(set(settings) - set(METHOD_FIELDS[method]) - {"codec"})
        if stray:
            raise DroidSpeakError(f"method_settings.{method}.{stray[0]}: method {method} reads "
                                  f"{', '.join(METHOD_FIELDS[method]) or 'no field of its own'} (and codec)")
    for key, value in cfg.method_settings.get(name, {}).items():
        cfg.method[key] = value
    unread = [key for key, unset in _UNSET.items() if key not in METHOD_FIELDS[name] and cfg.method[key] != unset]
    if unread:
        owners = {key: [m for m, fields in METHOD_FIELDS.items() if key in fields][0] for key in unread}
        raise DroidSpeakError(
            f"method={name} does not read {', '.join(f'method.{k}' for k in unread)} (set to "
            f"{', '.join(repr(cfg.method[k]) for k in unread)}): drop it, or, in a sweep over several methods, set it "
            f"per method as {', '.join(f'method_settings.{owners[k]}.{k}' for k in unread)}")
    if name == "cacheblend" and (cfg.method.check_layer is not None or cfg.method.compute_of is not None):
        zoo = all(ref.startswith(ZOO_PREFIX) for ref in (cfg.pair.receiver, cfg.pair.sender))
        plan = cacheblend_plan(cfg.method, (cfg.pair.receiver.removeprefix(ZOO_PREFIX),
                                            cfg.pair.sender.removeprefix(ZOO_PREFIX)),
                               family=family_root(cfg.zoo).name if zoo else None)
        if plan is None:
            return (f"no CacheBlend at check layer {cfg.method.check_layer} spends the compute of the plan "
                    f"{cfg.method.compute_of} chooses: its check layers alone cost more")
        cfg.method.plan = plan
    return None


def cacheblend_plan(method, models: tuple[str, str], family: str | None = None) -> str | None:
    """``cacheblend:R@L`` for ``method.check_layer`` L: R is ``method.ratio``, or, with ``method.compute_of`` (a
    ``profile:PATH[@TOL][@RULE]`` plan), the ratio at which CacheBlend recomputes as much as the plan that profile
    chooses for these (receiver, sender) ``models`` (of the zoo ``family`` folder, where the pair is a family's: a
    profile of same-named models of another family is refused): (L + R (N - L)) / N = k / N for its k of N layers.
    None where k < L (no ratio reaches it)."""
    layer = method.check_layer or 0
    if method.compute_of is None:
        ratio = method.ratio
    else:
        from droidspeak.profile.points import plan_layers
        from droidspeak.profile.profile_file import load_profile

        spec = parse_plan(method.compute_of)
        if spec.kind != "profile":
            raise DroidSpeakError(f"method.compute_of={method.compute_of}: a profile:PATH[@TOL][@RULE] plan")
        profile = load_profile(spec.profile_path)
        if (profile.receiver, profile.sender) != models:
            raise DroidSpeakError(f"method.compute_of={method.compute_of}: a profile of {profile.pair}, not of "
                                  f"{models[0]}<-{models[1]}")
        measured_on = (profile.extra.get("job") or {}).get("family")
        if family is not None and measured_on not in (None, family):
            raise DroidSpeakError(f"method.compute_of={method.compute_of}: measured on the family {measured_on}, "
                                  f"not on the one configured ({family})")
        if layer >= profile.num_layers:
            raise DroidSpeakError(f"method.check_layer={layer}: the model has layers 0-{profile.num_layers - 1}")
        profile.check_choice(spec.tolerance, spec.rule)
        layers, _ = plan_layers(profile.choose(spec.tolerance, rule=spec.rule), profile.num_layers)
        if layers < layer:
            return None
        ratio = round((layers - layer) / (profile.num_layers - layer), 4)
    return format_plan(RecomputePlan("cacheblend", token_fraction=ratio, check_layer=layer or None))


def resolve_model(reference: str, adapter: str | None, family) -> tuple[str, str | None]:
    """(path or HF id, adapter) for a model reference; ``zoo:`` names come from the embedded family."""
    if not reference.startswith(ZOO_PREFIX):
        return reference, adapter
    name = reference[len(ZOO_PREFIX) :]
    if family is None:
        raise DroidSpeakError(f"model {reference!r} refers to the embedded family, but no family was built")
    if name not in family.models:
        raise DroidSpeakError(f"the embedded family has no model {name!r}; it has {sorted(family.models)}")
    args = family.load_args(name)
    return args["path"], args["adapter"]


def check_family(pair, family) -> None:
    """A pair written for one zoo family, run against another, fails before any model is loaded."""
    name = None if family is None else family.report.get("name")
    if pair.get("family") and name is not None and pair.family != name:
        raise DroidSpeakError(f"pair {pair.name!r} belongs to the zoo family {pair.family!r}, but the configured "
                              f"family is {name!r}: add zoo={pair.family}")


def uses_zoo(cfg) -> bool:
    return cfg.task.source == "zoo" or any(
        str(ref).startswith(ZOO_PREFIX) for ref in (cfg.pair.receiver, cfg.pair.sender)
    )


def point_identity(cfg, family, plan: str | None = None) -> dict:
    """Everything that determines the point's result (its resume key); not where it is written or logged. The plan
    is keyed in its canonical spelling (``recompute:00-01`` is ``recompute:0-1``) unless ``plan`` says otherwise."""
    identity = {
        "pair": OmegaConf.to_container(cfg.pair, resolve=True),
        "task": {k: cfg.task[k] for k in ("name", "source", "lm_eval_task", "split", "limit", "context_delimiter")},
        "method": cfg.method.name,
        "plan": plan if plan is not None else str(parse_plan(cfg.method.plan)),  # one spelling per plan
        "seed": cfg.seed,
        "dtype": cfg.dtype,
        "family": None if family is None else family.root.name,
    }
    extensions = {} if family is None else family.report.get("extensions", {})
    names = {ref: str(ref).removeprefix(ZOO_PREFIX) for ref in (cfg.pair.receiver, cfg.pair.sender)
             if str(ref).startswith(ZOO_PREFIX)}
    trained_apart = {ref: extensions[name]["folder"] for ref, name in names.items() if name in extensions}
    if trained_apart:  # an extension's own recipe, which the family's name does not cover
        identity["extensions"] = trained_apart
    if cfg.method.codec != "lossless":  # lossless points keep the keys they had before codecs existed
        identity["codec"] = cfg.method.codec
    drawn_later = cfg.task.split in (WIDE_TEST, DEV) and family is not None and cfg.task.name in family.task_files
    if drawn_later:  # a split drawn after the build: its size, so its questions, may change under the same name
        identity["questions"] = family.task_version(cfg.task.name, cfg.task.split)
    if cfg.method.name == "profile":  # a re-profiled file (or a foreign one allowed) is another point
        identity |= {"profile": _profile_digest(cfg.method.path),
                     "allow_foreign_profile": bool(cfg.method.get("allow_foreign_profile"))}
    return identity


def resume_keys(cfg, family) -> tuple[str, str]:
    """The point's key, and the key rows written before plans were keyed canonically carry (they still resume)."""
    return point_key(point_identity(cfg, family)), point_key(point_identity(cfg, family, plan=cfg.method.plan))


def _profile_digest(path: str) -> str | None:
    """sha256 of a profile file (None while it does not exist: the backend then fails with its own error)."""
    return file_sha256(path) if Path(path).is_file() else None


def task_metric(task) -> str:
    """The metric that counts as quality: an embedded task's own metric unless the config names one."""
    if task.metric != "auto":
        return task.metric
    if task.source != "zoo":
        raise DroidSpeakError(f"task {task.name!r} comes from lm-eval: set task.metric to one of its metrics")
    return TASKS[task.name].metric


def task_setup(cfg, family) -> tuple[str, str | None]:
    """lm-eval task name and include path for the configured task."""
    task = cfg.task
    if task.source == "zoo":
        if task.name not in family.task_files:
            raise DroidSpeakError(
                f"unknown embedded task {task.name!r}; the family has {sorted(family.task_files)} "
                "(LongBench tasks are task=longbench_<name>)"
            )
        folder = Path(family.task_files[task.name][task.split]).stem  # a drawn split's size is in its file's name
        include = write_embedded_tasks(family.task_files, family.root / "lm_eval_tasks" / folder, split=task.split)
        return task.lm_eval_task or embedded_task_name(task.name), str(include)
    if task.source == "lm_eval":
        return task.lm_eval_task or LONGBENCH.get(task.name, task.name), task.include_path
    raise DroidSpeakError(f"task source must be 'zoo' or 'lm_eval', not {task.source!r}")


def model_args(cfg, family) -> dict:
    """The droidspeak backend's model_args for this point (the 'sender' method: the sender answers itself)."""
    check_family(cfg.pair, family)
    receiver, receiver_adapter = resolve_model(cfg.pair.receiver, cfg.pair.receiver_adapter, family)
    sender, sender_adapter = resolve_model(cfg.pair.sender, cfg.pair.sender_adapter, family)
    if cfg.method.name == "sender":
        receiver, receiver_adapter = sender, sender_adapter
    return dict(
        receiver=receiver,
        sender=sender,
        receiver_adapter=receiver_adapter,
        sender_adapter=sender_adapter,
        plan=cfg.method.plan,
        context_delimiter=cfg.task.context_delimiter,
        device=cfg.device,
        dtype=cfg.dtype,
        batch_size=cfg.batch_size,
        cache_dir=cfg.cache_dir,
        allow_foreign_profile=bool(cfg.method.get("allow_foreign_profile") or False),
        allow_mismatch="+".join(cfg.pair.allow_mismatch),
        transfer_codec=cfg.method.codec,
    )


def evaluate_point(cfg, family) -> ResultRow:
    """Run lm-eval for one point and return its results row (without writing it anywhere)."""
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from droidspeak.lmeval.backend import cache_environment_report

    cache_environment_report()
    task_name, include_path = task_setup(cfg, family)
    args = model_args(cfg, family)
    lm = get_model("droidspeak")(**args)
    started = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=[task_name],
        # our own tasks need no index of lm-eval's hundreds of built-in YAMLs (seconds per point)
        task_manager=TaskManager(include_path=include_path, include_defaults=cfg.task.source != "zoo"),
        limit=cfg.task.limit,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
        log_samples=True,  # per-question scores: confidence intervals need them
        verbosity="WARNING",
    )
    eval_seconds = time.perf_counter() - started
    metrics = {  # lm-eval keys metrics as "name,filter"; stderr and bookkeeping entries are not metrics
        k.split(",")[0]: v
        for k, v in out["results"][task_name].items()
        if "," in k and "stderr" not in k and isinstance(v, (int, float))
    }
    metric = task_metric(cfg.task)
    if metric not in metrics:
        raise DroidSpeakError(f"task {task_name} reported {sorted(metrics)}, not the configured metric {metric!r}")
    samples = sorted(out["samples"][task_name], key=lambda sample: sample["doc_id"])
    per_sample = [float(sample[metric]) for sample in samples] if all(metric in s for s in samples) else None
    timed = lm.shared_contexts()[: cfg.timing.contexts]
    (timing,) = time_plans(lm.pair.receiver, lm.sender_caches(timed), [lm.plan], lm.pair.num_layers,
                           repeats=cfg.timing.repeats, warmup=cfg.timing.warmup)
    done = lm.summary()
    cost = done.cost
    identity = point_identity(cfg, family)
    n_samples = out["n-samples"][task_name]["effective"]
    return new_row(
        lm.pair.receiver.model,
        key=point_key(identity),
        source="sweep",
        pair=cfg.pair.name,
        receiver=cfg.pair.receiver if cfg.method.name != "sender" else cfg.pair.sender,
        sender=cfg.pair.sender,
        task=cfg.task.name,
        split=cfg.task.split,
        lm_eval_task=task_name,
        method=cfg.method.name,
        plan=str(done.plan) if cfg.method.name != "profile" else cfg.method.plan,
        resolved_plan=str(done.plan),
        metrics=metrics,
        metric=metric,
        quality=metrics[metric],
        n_samples=n_samples,
        question_set=question_set_digest(
            cfg.task.name, cfg.task.split, n_samples, task_version(cfg, family, task_name, out)
        ),
        num_layers=done.num_layers,
        recomputed_layers=cost.recomputed_layers if cost else None,
        recomputed_fraction=cost.compute_fraction if cost else None,
        transitions=cost.transitions if cost else None,
        bytes_loaded=cost.bytes_to_load if cost else None,
        codec=done.codec,
        transfer_bytes=done.transfer_bytes,
        receiver_invocation=list(done.invocation) or None,
        cost=asdict(cost) if cost else None,
        prefill_seconds=statistics.median(timing.plan_seconds),
        baseline_prefill_seconds=statistics.median(timing.baseline_seconds),
        speedup=timing.speedup,
        speedup_spread=list(timing.spread),
        timed_contexts=len(timed),
        timed_repeats=cfg.timing.repeats,
        timed_path=CONTEXT_PREFILL,
        eval_seconds=eval_seconds,
        sender_prefills=done.sender_prefills,
        sender_cache_hits=done.sender_cache_hits,
        seed=cfg.seed,
        family=identity["family"],
        per_sample=per_sample,
        profile=done.profile,
        warnings=done.warnings or None,
    )


def task_version(cfg, family, task_name: str, out: dict) -> str:
    """The version of the data a point was scored on: an embedded task's split file (its sha256), else lm-eval's own
    version of the task."""
    if cfg.task.source == "zoo":
        return family.task_version(cfg.task.name, cfg.task.split)
    return f"lm-eval:{task_name}:{out['versions'][task_name]}"
