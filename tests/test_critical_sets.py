"""Critical sets side by side: a difference is called only where the questions cannot explain it."""

import numpy as np

from droidspeak.profile.critical_sets import SAME_RECEIVER, SAME_SENDER, SEED_TWINS, relation_of, side_by_side
from droidspeak.profile.profile_file import LayerSensitivity, Profile

LAYERS, QUESTIONS = 8, 40


def _profile(receiver: str, sender: str, harmed: dict[int, float], *, noisy: set[int] = frozenset(),
             inputs: str = "q") -> Profile:
    """A profile whose receiver answers every question right; reusing layer l alone loses ``harmed[l]`` of the
    questions (deterministically), and a ``noisy`` layer loses 4 of 40: 10%, on the threshold's edge."""
    reference = [1.0] * QUESTIONS
    rng = np.random.default_rng(len(receiver) + len(sender))
    single = []
    for layer in range(LAYERS):
        wrong = round(harmed.get(layer, 0.0) * QUESTIONS) + (5 if layer in noisy else 0)
        scores = [0.0] * wrong + [1.0] * (QUESTIONS - wrong)
        rng.shuffle(scores)
        single.append(LayerSensitivity(layer, float(np.mean(scores)), tuple(scores)))
    return Profile(receiver=receiver, sender=sender, task="t", metric="acc", num_layers=LAYERS, reference_quality=1.0,
                   points=[], reference_per_input=reference, single_layer=single,
                   inputs=[f"{inputs}{i}" for i in range(QUESTIONS)])


def test_a_layer_critical_for_one_pair_only_is_called_a_difference_and_a_shared_one_is_not():
    first = _profile("r", "a", {2: 0.5, 3: 0.5})
    second = _profile("r", "b", {3: 0.5, 6: 0.5})
    (comparison,) = side_by_side([first, second], {})
    assert comparison.relation == SAME_RECEIVER and comparison.paired
    assert comparison.critical_first == (2, 3) and comparison.critical_second == (3, 6)
    assert comparison.only_first == (2,) and comparison.only_second == (6,)
    assert abs(comparison.jaccard - 1 / 3) < 1e-9
    assert comparison.jaccard_interval[1] < comparison.ceiling[0] == comparison.ceiling[1] == 1.0


def test_a_layer_on_the_threshold_is_not_called_a_difference():
    """Reused alone it loses 5 of 40 questions (12.5%): critical on these questions, not in every resample."""
    first = _profile("r", "a", {3: 0.5}, noisy={5})
    second = _profile("r", "b", {3: 0.5})
    (comparison,) = side_by_side([first, second], {})
    assert comparison.critical_first == (3, 5) and comparison.critical_second == (3,)
    assert comparison.only_first == () and comparison.only_second == ()
    assert comparison.ceiling[0] < 1.0 and comparison.jaccard_interval[1] == 1.0


def test_relations_follow_the_pairs_and_the_recipes():
    recipe = {"kind": "lora", "tasks": ["t"], "steps": 60, "seed": 0}
    recipes = {"x": recipe, "x1": {**recipe, "seed": 1}, "y": {**recipe, "tasks": ["u"]}}
    code, twin, other = _profile("x", "base", {}), _profile("x1", "base", {}), _profile("y", "base", {}, inputs="u")
    assert relation_of(code, twin, recipes) == SEED_TWINS
    assert relation_of(code, other, recipes) == SAME_SENDER
    assert relation_of(code, _profile("x", "z", {}), recipes) == SAME_RECEIVER
    assert relation_of(code, _profile("w", "z", {}), recipes) is None
    (comparison,) = side_by_side([code, other], recipes)
    assert not comparison.paired  # other questions: resampled apart
