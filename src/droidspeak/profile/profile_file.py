"""The profile file: everything offline profiling learned about one sender/receiver pair, as one JSON document.

Why it exists: profiling costs hours on a real pair, serving needs only the frontier. The file is what the
``profile:PATH[@TOL][@RULE]`` plan reads; :func:`resolve_profile_plan` turns that plan into a concrete one at the
tolerance, after checking the file was made for this very pair: the same layer count, and the same receiver and
sender weights, adapters and dtype (``identity``; where the files live does not matter). A profile measured on
another pair is an error naming both, unless the caller opts in (``allow_foreign``); using it on another task is
allowed, and the row records it.

Schema (``schema_version`` 1; every quality is in units of ``metric``, higher is better)::

    {
      "schema": "droidspeak.profile", "schema_version": 1,
      "pair": {"name": "ft_a<-ft_b",
               "receiver": {"name": "ft_a", "fingerprint": "…" | null,
                            "identity": {"weights": "sha256…", "adapter": "sha256…" | null, "dtype": "float32"} | null},
               "sender":   {same shape}},
      "task": "hotpot_like", "metric": "f1",
      "num_layers": 8, "granularity": 1,
      "n_samples": 50, "inputs": ["doc-0", …] | null,        # per_input arrays follow this order
      "reference": {"quality": 0.83, "per_input": [...] | null},   # receiver's own full prefill
      "sender_quality": 0.41 | null,                          # the sender answering this task itself
      "points":   [{"plan": "recompute:2-4", "recomputed_layers": 3, "quality": 0.79,
                    "transitions": 1, "cost": 0.012, "per_input": [...]}, …],
      "frontier": [same shape; derived from points, rewritten on save, recomputed on load],
      "single_layer": [{"layer": 0, "quality": 0.82, "per_input": [...] | null}, …],  # reuse only this layer
      "transitions":  [points at fixed recomputed layers, varying transitions (Fig. 10)],
      "timing": {"total_seconds": 3600.0, "evaluations": 528, ...},
      "choice": {"rule": "bootstrap95", "level": 0.95, "resamples": 2000, "questions": 50} | null,
                                                              # the rule a profile: plan chooses by (null: point)
      "created": "2025-01-01T00:00:00+00:00", "git_sha": "abc123" | null, "code_version": "0.1.0+…" | null,
      "extra": {}                                             # free-form (proxy scores, notes)
    }
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from droidspeak.atomic import write_text
from droidspeak.engine.plan import DEFAULT_PROFILE_TOLERANCE, RecomputePlan, format_plan, parse_plan
from droidspeak.errors import PlanError
from droidspeak.profile.choice import ChoiceRule, choice_rule, choose_plan, pareto_frontier
from droidspeak.profile.points import ProfilePoint, plan_layers
from droidspeak.profile.sensitivity import critical_layers

SCHEMA = "droidspeak.profile"
SCHEMA_VERSION = 1


class ProfileError(PlanError):
    """A profile file is missing, corrupt, of another schema version, or made for another model."""


@dataclass(frozen=True)
class LayerSensitivity:
    """Quality with only ``layer``'s K/V reused from the sender (every other layer recomputed)."""

    layer: int
    quality: float
    per_input: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        out: dict = {"layer": self.layer, "quality": self.quality}
        if self.per_input is not None:
            out["per_input"] = list(self.per_input)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "LayerSensitivity":
        per_input = data.get("per_input")
        return cls(
            layer=int(data["layer"]),
            quality=float(data["quality"]),
            per_input=None if per_input is None else tuple(float(q) for q in per_input),
        )


@dataclass
class Profile:
    """One pair's profile on one task. ``points`` are the source of truth; ``frontier`` is derived."""

    receiver: str
    sender: str
    task: str
    metric: str
    num_layers: int
    reference_quality: float
    points: list[ProfilePoint]
    receiver_fingerprint: str | None = None
    sender_fingerprint: str | None = None
    receiver_identity: dict | None = None  # loading.Fingerprint.identity: what resolve_profile_plan checks
    sender_identity: dict | None = None
    granularity: int = 1
    n_samples: int | None = None
    inputs: list[str] | None = None
    reference_per_input: list[float] | None = None
    sender_quality: float | None = None
    single_layer: list[LayerSensitivity] = field(default_factory=list)
    transitions: list[ProfilePoint] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    created: str | None = None
    git_sha: str | None = None
    code_version: str | None = None  # droidspeak.track.version.code_version() of the profiler that measured it
    choice_rule: str | None = None  # the rule its plans are chosen by (None: written before rules were recorded,
    # chosen by the point rule; profile.choice)
    extra: dict = field(default_factory=dict)

    @property
    def pair(self) -> str:
        return f"{self.receiver}<-{self.sender}"

    @property
    def frontier(self) -> list[ProfilePoint]:
        return pareto_frontier(self.points)

    @property
    def single_layer_table(self) -> dict[int, float]:
        return {entry.layer: entry.quality for entry in self.single_layer}

    def point(self, plan: str) -> ProfilePoint | None:
        """The profiled point of a plan string, if any."""
        return next((p for p in self.points if p.plan == plan), None)

    @property
    def full_reuse_quality(self) -> float | None:
        p = self.point("full_reuse")
        return None if p is None else p.quality

    @property
    def questions(self) -> int | None:
        """How many questions each of its qualities is a mean of."""
        return len(self.reference_per_input) if self.reference_per_input is not None else self.n_samples

    def rule(self, name: str | None = None) -> ChoiceRule:
        """The choice rule ``name``, else the one this profile records, else the point rule it was chosen by."""
        return choice_rule(name or self.choice_rule or "point")

    def choose(self, tolerance: float = DEFAULT_PROFILE_TOLERANCE, *, fallback: str = "full_prefill",
               rule: str | None = None) -> str:
        """Fewest-layer plan that ``rule`` (default: :meth:`rule`) accepts within ``tolerance`` of the receiver's
        own quality (see choice.choose_plan)."""
        return choose_plan(self.points, self.reference_quality, tolerance, fallback=fallback, rule=self.rule(rule),
                           reference_per_input=self.reference_per_input)

    def check_choice(self, tolerance: float, rule: str | None = None) -> None:
        """A profile whose group search was steered by one rule and tolerance (coarse_to_fine) chooses with those
        only: with others it could miss a plan the search never scored."""
        search = self.extra.get("search") or {}
        if search.get("kind") != "coarse_to_fine":
            return
        asked = (self.rule(rule).name, float(tolerance))
        if asked != (search["rule"], float(search["tolerance"])):
            raise ProfileError(f"this profile's coarse-to-fine search was steered by rule {search['rule']} at "
                               f"tolerance {search['tolerance']:g}; it cannot choose by {asked[0]} at {asked[1]:g} "
                               "(profile again with those, or with search=exhaustive)")

    def critical_layers(self, threshold: float = 0.10) -> list[int]:
        return critical_layers(self.single_layer_table, self.reference_quality, threshold)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "pair": {
                "name": self.pair,
                "receiver": {
                    "name": self.receiver,
                    "fingerprint": self.receiver_fingerprint,
                    "identity": self.receiver_identity,
                },
                "sender": {
                    "name": self.sender,
                    "fingerprint": self.sender_fingerprint,
                    "identity": self.sender_identity,
                },
            },
            "task": self.task,
            "metric": self.metric,
            "num_layers": self.num_layers,
            "granularity": self.granularity,
            "n_samples": self.n_samples,
            "inputs": self.inputs,
            "reference": {"quality": self.reference_quality, "per_input": self.reference_per_input},
            "sender_quality": self.sender_quality,
            "points": [p.to_dict() for p in self.points],
            "frontier": [p.to_dict() for p in self.frontier],
            "single_layer": [s.to_dict() for s in self.single_layer],
            "transitions": [p.to_dict() for p in self.transitions],
            "timing": dict(self.timing),
            "created": self.created,
            "git_sha": self.git_sha,
            "code_version": self.code_version,
            "choice": None if self.choice_rule is None else self.rule().record(self.questions),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str = "profile") -> "Profile":
        """Parse and validate a profile document; every problem raises :class:`ProfileError` naming ``source``."""
        if not isinstance(data, Mapping):
            raise ProfileError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise ProfileError(
                f"{source}: not a droidspeak profile (schema={data.get('schema')!r}, expected {SCHEMA!r})"
            )
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ProfileError(
                f"{source}: profile schema version {data.get('schema_version')!r}, this droidspeak reads "
                f"version {SCHEMA_VERSION}; re-run profiling for this pair"
            )
        try:
            pair, reference = data["pair"], data["reference"]
            profile = cls(
                receiver=str(pair["receiver"]["name"]),
                sender=str(pair["sender"]["name"]),
                receiver_fingerprint=pair["receiver"].get("fingerprint"),
                sender_fingerprint=pair["sender"].get("fingerprint"),
                receiver_identity=_identity(pair["receiver"].get("identity")),
                sender_identity=_identity(pair["sender"].get("identity")),
                task=str(data["task"]),
                metric=str(data["metric"]),
                num_layers=int(data["num_layers"]),
                granularity=int(data.get("granularity", 1)),
                n_samples=None if data.get("n_samples") is None else int(data["n_samples"]),
                inputs=None if data.get("inputs") is None else [str(i) for i in data["inputs"]],
                reference_quality=float(reference["quality"]),
                reference_per_input=_floats(reference.get("per_input")),
                sender_quality=None if data.get("sender_quality") is None else float(data["sender_quality"]),
                points=[ProfilePoint.from_dict(p) for p in data["points"]],
                single_layer=[LayerSensitivity.from_dict(s) for s in data.get("single_layer") or []],
                transitions=[ProfilePoint.from_dict(p) for p in data.get("transitions") or []],
                timing=dict(data.get("timing") or {}),
                created=data.get("created"),
                git_sha=data.get("git_sha"),
                code_version=data.get("code_version"),
                choice_rule=None if data.get("choice") is None else str(data["choice"]["rule"]),
                extra=dict(data.get("extra") or {}),
            )
        except KeyError as err:
            raise ProfileError(f"{source}: missing field {err.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise ProfileError(f"{source}: malformed field ({err})") from None
        profile.validate(source)
        return profile

    def validate(self, source: str = "profile") -> "Profile":
        """Check internal consistency: plans fit ``num_layers``, counts match, qualities finite."""
        if self.num_layers < 1:
            raise ProfileError(f"{source}: num_layers must be >= 1, got {self.num_layers}")
        if not math.isfinite(self.reference_quality):
            raise ProfileError(f"{source}: reference quality is {self.reference_quality}")
        if not self.points:
            raise ProfileError(f"{source}: the profile has no points")
        if self.choice_rule is not None:
            try:
                self.rule()
            except PlanError as err:
                raise ProfileError(f"{source}: {err}") from None
        for table, points in (("points", self.points), ("transitions", self.transitions)):
            for p in points:
                try:
                    layers, _ = plan_layers(p.plan, self.num_layers)
                except PlanError as err:
                    raise ProfileError(f"{source}: {table} entry {p.plan!r}: {err}") from None
                if layers != p.recomputed_layers:
                    raise ProfileError(
                        f"{source}: {table} entry {p.plan!r} says {p.recomputed_layers} recomputed layers, "
                        f"the plan recomputes {layers}"
                    )
                if not math.isfinite(p.quality):
                    raise ProfileError(f"{source}: {table} entry {p.plan!r} has quality {p.quality}")
        for s in self.single_layer:
            if not 0 <= s.layer < self.num_layers:
                raise ProfileError(f"{source}: single-layer entry for layer {s.layer} outside 0-{self.num_layers - 1}")
        n_inputs = len(self.inputs) if self.inputs is not None else None
        for name, values in self._per_input_arrays():
            if n_inputs is not None and len(values) != n_inputs:
                raise ProfileError(f"{source}: {name} has {len(values)} per-input values for {n_inputs} inputs")
        return self

    def _per_input_arrays(self):
        if self.reference_per_input is not None:
            yield "reference", self.reference_per_input
        for p in [*self.points, *self.transitions]:
            if p.per_input is not None:
                yield f"point {p.plan!r}", p.per_input
        for s in self.single_layer:
            if s.per_input is not None:
                yield f"single-layer entry {s.layer}", s.per_input


def _floats(values: Sequence | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _identity(value: Mapping | None) -> dict | None:
    return None if value is None else {str(k): None if v is None else str(v) for k, v in dict(value).items()}


def save_profile(path: str | os.PathLike, profile: Profile) -> Path:
    """Validate and write ``profile`` as JSON (atomically: a crash never leaves a half-written file)."""
    path = Path(path)
    profile.validate(str(path))
    if profile.created is None:
        profile.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        text = json.dumps(profile.to_dict(), indent=1, allow_nan=False)
    except ValueError as err:
        raise ProfileError(f"{path}: profile holds a non-finite number ({err}); JSON cannot store it") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, text + "\n")


def comparisons_path(profile_path: str | os.PathLike) -> Path:
    """Where profiling writes the comparisons beyond the paper: beside it, same stem, ``.comparisons.jsonl``."""
    return Path(profile_path).with_suffix(".comparisons.jsonl")


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a profile file; a missing, corrupt or foreign file raises :class:`ProfileError`."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProfileError(f"profile file {str(path)!r} does not exist (run profiling for this pair first)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError(f"profile file {str(path)!r} cannot be read ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProfileError(f"{path}: not valid JSON, the file is corrupt or truncated ({err})") from None
    return Profile.from_dict(data, source=str(path))


def check_profile_pair(
    profile: Profile, receiver: Mapping, sender: Mapping, *, source: str, allow_foreign: bool = False
) -> bool:
    """Whether ``profile`` was measured on another pair than (``receiver``, ``sender``) — identities as in
    :attr:`droidspeak.engine.loading.Fingerprint.identity`. Another pair is a :class:`ProfileError` naming both, unless
    ``allow_foreign``; then it returns True, for the caller to record."""
    differences = [
        f"{role} {field}: profile {_short(theirs.get(field))}, here {_short(ours.get(field))}"
        for role, theirs, ours in (("receiver", profile.receiver_identity, receiver),
                                   ("sender", profile.sender_identity, sender))
        if theirs is not None
        for field in sorted(set(theirs) | set(ours)) if theirs.get(field) != ours.get(field)
    ]
    if profile.receiver_identity is None or profile.sender_identity is None:
        differences.append("the profile records no model identity (written before droidspeak recorded it)")
    if not differences:
        return False
    if allow_foreign:
        return True
    raise ProfileError(
        f"{source}: this profile was measured on the pair {profile.pair} (task {profile.task}), not on the pair "
        "being served:\n  - " + "\n  - ".join(differences)
        + "\nprofile this pair, or set allow_foreign_profile=true to apply it anyway (every row then says so)"
    )


def _short(value) -> str:
    return "none" if value is None else str(value)[:12] + ("…" if len(str(value)) > 12 else "")


@dataclass(frozen=True)
class ResolvedProfile:
    """What a ``profile:`` plan became, and where it came from (a results row records it: ``ResultRow.profile``)."""

    plan: RecomputePlan
    path: str
    pair: str
    task: str
    tolerance: float
    foreign: bool
    choice: dict  # ChoiceRule.record: the rule, its level and the questions it read
    measured_dtype: str | None = None  # the receiver's dtype where the profile was measured (None: not recorded)

    def record(self) -> dict:
        return {"path": self.path, "pair": self.pair, "task": self.task, "tolerance": self.tolerance,
                "plan": format_plan(self.plan), "foreign_pair": self.foreign, **self.choice}


def resolve_profile_plan(
    plan: RecomputePlan | str,
    num_layers: int,
    *,
    receiver: Mapping,
    sender: Mapping,
    allow_foreign: bool = False,
    fallback: str = "full_prefill",
) -> ResolvedProfile:
    """Turn ``profile:PATH[@TOL][@RULE]`` into the concrete plan it selects for a model with ``num_layers`` layers.

    Loads the profile, checks it was made for this pair (layer count, and the ``receiver`` / ``sender``
    identities: see :func:`check_profile_pair`), picks the fewest-layer plan that RULE (default: the profile's own)
    accepts within TOL relative quality loss of the receiver's own quality (see
    :func:`droidspeak.profile.choice.choose_plan`; ``full_prefill`` when none qualifies), and returns it validated,
    with its provenance (the rule, its level and the questions it read included). Resolve once per run: this reads
    the file every call.
    """
    plan = parse_plan(plan) if isinstance(plan, str) else plan
    if plan.kind != "profile":
        raise PlanError(f"resolve_profile_plan needs a profile:PATH[@TOL][@RULE] plan, got {format_plan(plan)!r}")
    profile = load_profile(plan.profile_path)
    if profile.num_layers != num_layers:
        raise ProfileError(
            f"{plan.profile_path}: profile was made for a model with {profile.num_layers} layers "
            f"({profile.pair}), this model has {num_layers} layers"
        )
    foreign = check_profile_pair(profile, receiver, sender, source=plan.profile_path, allow_foreign=allow_foreign)
    tolerance = DEFAULT_PROFILE_TOLERANCE if plan.tolerance is None else plan.tolerance
    rule = profile.rule(plan.rule)
    profile.check_choice(tolerance, rule.name)
    chosen = parse_plan(profile.choose(tolerance, fallback=fallback, rule=rule.name), num_layers)
    return ResolvedProfile(chosen, str(plan.profile_path), profile.pair, profile.task, tolerance, foreign,
                           rule.record(profile.questions), (profile.receiver_identity or {}).get("dtype"))
