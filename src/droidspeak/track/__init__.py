"""Results: JSONL is the source of truth (one line per evaluated point); W&B mirrors it."""
