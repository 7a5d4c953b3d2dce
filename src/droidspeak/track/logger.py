"""The W&B mirror. ``NullLogger`` stands in when logging is disabled, so callers never branch on it."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Protocol

from droidspeak.errors import DroidSpeakError
from droidspeak.faults import fault_point

MODES = ("offline", "online", "disabled")


class Logger(Protocol):
    def log(self, values: dict[str, Any]) -> None: ...
    def table(self, key: str, columns: list[str], rows: list[list]) -> Any: ...
    def scatter(self, key: str, table: Any, x: str, y: str, title: str) -> None: ...
    def image(self, key: str, path: str | os.PathLike) -> None: ...
    def finish(self) -> None: ...


class NullLogger:
    def log(self, values):
        pass

    def table(self, key, columns, rows):
        return None

    def scatter(self, key, table, x, y, title):
        pass

    def image(self, key, path):
        pass

    def finish(self):
        pass


class WandbLogger:
    def __init__(self, run):
        self.run = run

    def log(self, values):
        self.run.log(values)
        fault_point("wandb_write")

    def table(self, key, columns, rows):
        import wandb

        table = wandb.Table(columns=columns, data=rows)
        self.run.log({key: table})
        return table

    def scatter(self, key, table, x, y, title):
        import wandb

        self.run.log({key: wandb.plot.scatter(table, x, y, title=title)})

    def image(self, key, path):
        import wandb

        self.run.log({key: wandb.Image(str(path))})

    def finish(self):
        self.run.finish()


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def check_mode(mode: str) -> str:
    """The effective W&B mode: the user's WANDB_MODE wins, else the config's; online needs credentials."""
    mode = os.environ.get("WANDB_MODE", mode)
    if mode not in MODES:
        raise DroidSpeakError(
            f"unknown W&B mode {mode!r}: choose one of {MODES} (logger=wandb_offline|wandb_online|none)"
        )
    if mode == "online" and not _has_wandb_credentials():
        raise DroidSpeakError(
            "W&B is set to online but no login was found: run `wandb login` (or set WANDB_API_KEY), "
            "or log offline with logger=wandb_offline and upload later with `wandb sync`"
        )
    return mode


def make_logger(
    mode: str,
    *,
    project: str,
    entity: str | None,
    name: str,
    group: str,
    config: dict,
    directory: str | Path,
    job_type: str = "eval",
) -> Logger:
    """A W&B run (offline unless told otherwise) or a NullLogger when disabled."""
    mode = check_mode(mode)
    if mode == "disabled":
        return NullLogger()
    import wandb

    Path(directory).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, name=name, group=group, job_type=job_type, config=config,
                     dir=str(directory), mode=mode, reinit="finish_previous")
    return WandbLogger(run)
