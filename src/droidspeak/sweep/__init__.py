"""The Hydra-facing jobs, each writing result rows: ``config`` (the main job's schemas), ``point`` (one evaluated sweep
point), ``profile_job`` (the profiling job) and ``callbacks`` (merging a multirun's job files); ``study`` runs a
whole study (conf/study/) from its steps, keeps its rows and renders its page; ``console`` is what every entry point
prints (third-party chatter off, a droidspeak error as one line)."""
