"""Results: the ResultRow schema (records), the locked JSONL append and the one reader (results), the W&B mirror
(logger). The JSONL file is the source of truth; W&B mirrors it."""
