"""The Hydra-facing layer (the only package that imports Hydra), each job writing result rows:

- ``config`` — every entry point's config schema, registered once in Hydra's ConfigStore;
- ``point`` — one evaluated sweep point; ``profile_job`` — the profiling job; ``callbacks`` — merging a multirun's
  job files;
- ``study`` — runs a whole study (conf/study/) from its steps, keeps its rows and renders its page;
- ``console`` — what every entry point prints (third-party chatter off, a droidspeak error as one line).
"""
