"""How many questions a choice needs: a profile's questions drawn again at smaller budgets, and the plan each choice
rule picks from each draw. Model-free — a profile stores every plan's per-question scores, so any budget or rule is
recomputed from the file; the test split then needs to score only the distinct plans the draws choose.

Questions are drawn uniformly without replacement (a profile reads whole contexts, so its questions are clustered;
a draw of questions is the more optimistic reading of a small budget).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from droidspeak.profile.profile_file import Profile, ProfileError


@dataclass(frozen=True)
class BudgetChoice:
    """The plan ``rule`` picks from ``questions`` (indices into the profile's inputs) of one pair's profile."""

    pair: str
    task: str
    budget: int
    draw: int
    rule: str
    plan: str
    questions: tuple[int, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "questions": list(self.questions)}

    @classmethod
    def from_dict(cls, data: dict) -> "BudgetChoice":
        return cls(**{**data, "questions": tuple(data["questions"])})


def restricted(profile: Profile, questions: Sequence[int]) -> Profile:
    """``profile`` as if it had read only ``questions``: every point's and the receiver's scores on those alone."""
    if profile.reference_per_input is None or any(p.per_input is None for p in profile.points):
        raise ProfileError(f"{profile.pair}: the profile keeps no per-question scores to draw questions from")

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    pick = lambda values: [values[i] for i in questions]  # noqa: E731
    points = [replace(p, per_input=tuple(pick(p.per_input)), quality=mean(pick(p.per_input))) for p in profile.points]
    reference = pick(profile.reference_per_input)
    return replace(profile, points=points, reference_per_input=reference, reference_quality=mean(reference),
                   n_samples=len(questions), inputs=None if profile.inputs is None else pick(profile.inputs),
                   single_layer=[], transitions=[])


def budget_choices(profile: Profile, budgets: Sequence[int], *, draws: int, rules: Sequence[str], tolerance: float,
                   seed: int = 0) -> list[BudgetChoice]:
    """For each budget below the profile's question count, ``draws`` draws (the same draws for every rule), and the
    whole profile once; each draw's plan under each rule (``full_prefill`` where the rule accepts none)."""
    total = profile.questions
    if not total:
        raise ProfileError(f"{profile.pair}: the profile records no questions")
    if (profile.extra.get("search") or {}).get("kind") == "coarse_to_fine":  # its plans were steered by every question
        raise ProfileError(f"{profile.pair}: a coarse-to-fine profile scored only the plans its own choice steered it "
                           "to; fewer questions may accept others it never scored (profile with search=exhaustive)")
    rng = random.Random(seed)
    drawn = [(budget, draw, tuple(sorted(rng.sample(range(total), budget))))
             for budget in sorted(b for b in set(budgets) if b < total) for draw in range(draws)]
    drawn.append((total, 0, tuple(range(total))))
    return [BudgetChoice(profile.pair, profile.task, budget, draw, rule,
                         restricted(profile, questions).choose(tolerance, rule=rule), questions)
            for budget, draw, questions in drawn for rule in rules]


def chosen_plans(choices: Sequence[BudgetChoice]) -> list[str]:
    """The distinct plans the draws choose, in first-chosen order (what the test split must score)."""
    return list(dict.fromkeys(c.plan for c in choices))

