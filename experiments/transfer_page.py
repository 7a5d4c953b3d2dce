"""Write reports/smollm2_transfer/ (page, summary.json, figure) from the transfer sweep's rows and the codec timings;
see droidspeak.figures.codec_page.

    python experiments/transfer_page.py
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.figures.codec_page import write_transfer_page
from droidspeak.sweep.console import entry_point
from droidspeak.track.records import read_results
from droidspeak.track.results import read_rows

log = logging.getLogger("transfer_page")


@entry_point("transfer_page")
def main(cfg: DictConfig) -> None:
    path = hydra.utils.to_absolute_path
    links = [int(rate) if float(rate).is_integer() else rate for rate in cfg.links_gbit]  # "1 Gb/s", not "1.0"
    results = [row.to_dict() for row in read_results(path(cfg.results))]  # unlike rows never share its tables
    page = write_transfer_page(results, read_rows(path(cfg.timing)),
                               OmegaConf.to_container(cfg.chosen), path(cfg.out_dir), links_gbit=links,
                               tolerance=cfg.tolerance, command=cfg.command,
                               template=path(cfg.template))
    log.info("wrote %s", page)


if __name__ == "__main__":
    main()
