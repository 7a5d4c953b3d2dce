"""Hydra callbacks of the main job (registered in conf/evaluate.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from droidspeak.track.results import RESULTS_FILE, merge_jobs

log = logging.getLogger("evaluate")


class MergeResults(Callback):
    """When a sweep ends (every launcher calls this in the launching process, after its jobs), merge the jobs'
    own result files into ``results.jsonl``."""

    def on_multirun_end(self, config, **kwargs) -> None:
        results = Path(config.results_dir) / RESULTS_FILE
        added = merge_jobs(results)
        log.info("merged %d job result(s) into %s", added, results)
