"""lm-eval task definitions: the embedded synthetic tasks (local JSONL, fully offline) and LongBench.

The embedded tasks are written as lm-eval YAML next to the family's data at run time (lm-eval's ``json``
loader needs concrete paths); every row is scored by ``process_results`` with the task's metric kind.
"""

from __future__ import annotations

from pathlib import Path

from droidspeak.atomic import write_text
from droidspeak.zoo.task_metrics import METRICS, exact_match
from droidspeak.zoo.tasks import TASKS

# lm-eval task name for each task config name (ours are generated; LongBench's ship with lm-eval).
LONGBENCH = {
    "hotpotqa": "longbench_hotpotqa",
    "2wikimqa": "longbench_2wikimqa",
    "multifieldqa_en": "longbench_multifieldqa_en",
    "multi_news": "longbench_multi_news",
    "lcc": "longbench_lcc",
    "repobench-p": "longbench_repobench-p",
}


def embedded_task_name(task: str) -> str:
    return f"droidspeak_{task}"


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Per-row metrics of an embedded task: its own metric, plus exact match (best over reference answers)."""
    kind = TASKS[doc["task"]]
    prediction = results[0].strip()
    answers = doc["answers"]
    return {
        kind.metric: max(METRICS[kind.metric](prediction, a) for a in answers),
        "exact_match": max(exact_match(prediction, a) for a in answers),
    }


_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}\\n\\n{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
process_results: !function utils.process_results
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {max_new_tokens}
  do_sample: false
metric_list:
  - metric: {metric}
    aggregation: mean
    higher_is_better: true
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  analogue: {analogue}
"""


def write_embedded_tasks(task_files: dict[str, dict[str, Path]], out_dir: str | Path, split: str = "test") -> Path:
    """Write one lm-eval YAML per embedded task (reading ``split``) into ``out_dir``; return it as include_path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # atomically: the parallel jobs of a sweep write (and lm-eval reads) the same files
    write_text(out / "utils.py", "from droidspeak.lmeval.task_yaml import process_results  # noqa: F401\n")
    for task, splits in task_files.items():
        kind = TASKS[task]
        write_text(
            out / f"{embedded_task_name(task)}.yaml",
            _YAML.format(
                name=embedded_task_name(task),
                data=Path(splits[split]).resolve(),
                max_new_tokens=kind.max_new_tokens,
                metric=kind.metric,
                analogue=kind.analogue,
            ),
        )
    return out
