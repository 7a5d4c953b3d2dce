"""Pure metric functions of the embedded tasks, LongBench-style: token F1 / exact match with SQuAD answer
normalisation, Rouge-L (LCS F-measure over tokens), and code edit similarity. All return values in [0, 1]."""

from __future__ import annotations

import re
import string
from collections import Counter
from difflib import SequenceMatcher

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) - {"_"}


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation (but keep identifiers' underscores) and articles, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    lcs = _lcs(pred, gold)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(gold)
    return 2 * precision * recall / (precision + recall)


def edit_similarity(prediction: str, answer: str) -> float:
    """Character-level similarity of the first line (fuzz.ratio / 100, as LongBench's code_sim_score)."""
    lines = [line for line in prediction.lstrip("\n").split("\n") if line.strip()]
    first = lines[0].strip() if lines else ""
    return SequenceMatcher(None, first, answer.strip()).ratio()


METRICS = {"em": exact_match, "f1": f1, "rouge_l": rouge_l, "edit_sim": edit_similarity}
