"""Quickstart: a receiver answers over contexts its sender prefilled, on the embedded model family.

    .venv/bin/python examples/quickstart.py

Installs the shipped family on first use (seconds; cached afterwards), then compares plans on 16 test questions of
ft-mdqa reusing ft-fieldqa's caches: reused as they are, the sender's K/V cost the receiver answers; recomputing
layers 0-1 recovers them, and recomputing layers 2-7 (three times the work) does not.
"""

from pathlib import Path

from hydra import compose, initialize_config_dir

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak import ReusePair
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family
from droidspeak.zoo.tasks import score

with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
    cfg = compose(config_name="build_zoo")
family = build_family(cfg.zoo)
receiver, sender, task = "ft-mdqa", "ft-fieldqa", "mdqa"
print(f"receiver {receiver} reuses the cache of sender {sender} on its task {task}")

pair = ReusePair(sender=family.load(sender), receiver=family.load(receiver))
rows = read_rows(family.task_files[task]["test"])[:16]
caches = pair.prefill([row["context"] for row in rows])  # the sender's K/V and E, once per context
questions = ["\n\n" + row["question"] for row in rows]  # receiver-only suffix, as in the lm-eval tasks
last = pair.num_layers - 1
for plan in ["full_prefill", "full_reuse", "recompute:0-1", f"recompute:2-{last}"]:
    answers = pair.generate(caches, questions, plan, max_new_tokens=12)  # the family ends answers with EOS
    quality = sum(score(task, a.strip(), r["answers"]) for a, r in zip(answers, rows)) / len(rows)
    cost = pair.prepare(caches, plan).cost
    print(
        f"{plan:>16}: {task} score {quality:.2f} | recomputes {cost.compute_fraction:.0%} of the context's layer work, "
        f"loads {cost.bytes_to_load / 2**10:.0f} KiB from the sender"
    )
