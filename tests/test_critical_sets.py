"""Critical sets side by side: a difference is called only where the questions cannot explain it."""

import math

import numpy as np

from droidspeak.profile.critical_sets import (
    OTHER_TASK,
    SAME_RECEIVER,
    SAME_SENDER,
    SEED_TWINS,
    TWINS,
    relation_of,
    side_by_side,
)
from droidspeak.profile.profile_file import LayerSensitivity, Profile

LAYERS, QUESTIONS = 8, 40


def _profile(receiver: str, sender: str, harmed: dict[int, float], *, edge: set[int] = frozenset(),
             task: str = "t") -> Profile:
    """A profile whose receiver answers every question right; reusing layer l alone loses ``harmed[l]`` of the
    questions, and an ``edge`` layer loses 5 of 40 (12.5%): critical on these questions, not in every resample."""
    rng = np.random.default_rng(len(receiver) + len(sender))
    single = []
    for layer in range(LAYERS):
        wrong = round(harmed.get(layer, 0.0) * QUESTIONS) + (5 if layer in edge else 0)
        scores = [0.0] * wrong + [1.0] * (QUESTIONS - wrong)
        rng.shuffle(scores)
        single.append(LayerSensitivity(layer, float(np.mean(scores)), tuple(scores)))
    return Profile(receiver=receiver, sender=sender, task=task, metric="acc", num_layers=LAYERS,
                   reference_quality=1.0, points=[], reference_per_input=[1.0] * QUESTIONS, single_layer=single,
                   inputs=[f"{task}{i}" for i in range(QUESTIONS)])


def test_a_layer_critical_for_one_pair_only_is_called_a_difference_and_a_shared_one_is_not():
    first = _profile("r", "a", {2: 0.5, 3: 0.5})
    second = _profile("r", "b", {3: 0.5, 6: 0.5})
    (comparison,) = side_by_side([first, second], {})
    assert comparison.relation == SAME_RECEIVER and comparison.paired and comparison.undefined == 0
    assert comparison.critical_first == (2, 3) and comparison.critical_second == (3, 6)
    assert comparison.differs_first == (2,) and comparison.differs_second == (6,)
    assert abs(comparison.jaccard - 1 / 3) < 1e-9 and abs(comparison.jaccard_resampled - 1 / 3) < 1e-9
    assert comparison.self_agreement == (1.0, 1.0)  # far from the line: every resample agrees with itself


def test_a_layer_on_the_threshold_is_not_called_a_difference_and_lowers_self_agreement():
    first = _profile("r", "a", {3: 0.5}, edge={5})
    second = _profile("r", "b", {3: 0.5})
    (comparison,) = side_by_side([first, second], {})
    assert comparison.critical_first == (3, 5) and comparison.critical_second == (3,)
    assert comparison.differs_first == () and comparison.differs_second == ()
    assert comparison.self_agreement[0] < 1.0 == comparison.self_agreement[1]
    assert comparison.jaccard == 0.5 < comparison.jaccard_resampled < 1.0


def test_no_critical_layer_on_either_side_is_no_overlap_to_measure_not_perfect_agreement():
    (comparison,) = side_by_side([_profile("r", "a", {}), _profile("r", "b", {})], {})
    assert math.isnan(comparison.jaccard) and math.isnan(comparison.jaccard_resampled)
    assert all(math.isnan(a) for a in comparison.self_agreement) and comparison.undefined > 0


def test_relations_follow_the_pairs_the_tasks_and_the_recipes():
    recipe = {"kind": "lora", "tasks": ["t"], "steps": 60, "seed": 0}
    recipes = {"x": recipe, "x1": {**recipe, "seed": 1}, "y": recipe | {"steps": 240}, "w": {**recipe, "tasks": ["u"]}}
    code, twin = _profile("x", "base", {}), _profile("x1", "base", {})
    assert relation_of(code, twin, recipes) == SEED_TWINS
    assert relation_of(code, _profile("y", "base", {}), recipes) == TWINS["steps"]  # 240 steps, not 60: that alone
    assert relation_of(code, _profile("y", "base", {}), {**recipes, "y": recipes["y"] | {"rank": 4}}) == SAME_SENDER
    assert relation_of(code, _profile("w", "base", {}, task="u"), recipes) == OTHER_TASK
    assert relation_of(code, _profile("x", "z", {}), recipes) == SAME_RECEIVER
    assert relation_of(code, _profile("x", "z", {}, task="u"), recipes) is None  # another task: not the sender alone
    assert relation_of(code, _profile("v", "z", {}), recipes) is None
    (comparison,) = side_by_side([code, _profile("w", "base", {2: 0.5}, task="u")], recipes)
    assert not comparison.paired  # other questions: resampled apart
