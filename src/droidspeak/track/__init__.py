"""Results: ``records`` (the ResultRow schema), ``results`` (the locked JSONL append, the one reader, kept rows),
``version`` (the engine's code version a row was computed by), ``logger`` (the W&B mirror) and ``wandb_report`` (a W&B
Report built by code). The JSONL file is the source of truth; W&B mirrors it."""
