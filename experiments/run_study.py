"""Run a study end to end: its steps (conf/study/<name>.yaml), its rows kept beside its page, the page rendered.

    python experiments/run_study.py study=smollm2                     # make study NAME=smollm2
    python experiments/run_study.py study=smollm2 render_only=true    # the page again from the committed rows
    python experiments/run_study.py study=gemma3 cheap=true           # a minutes-long rehearsal in outputs/
    python experiments/run_study.py study=smollm2 dry_run=true        # print the commands
"""

from __future__ import annotations

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.sweep.console import entry_point
from droidspeak.sweep.study import RunStudyConfig, run_study


@entry_point("run_study")
def main(cfg: RunStudyConfig) -> None:
    run_study(cfg)


if __name__ == "__main__":
    main()
