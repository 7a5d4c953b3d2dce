"""lm-eval integration: the ``droidspeak`` model backend, its CLI wrapper, and our local task YAMLs."""
