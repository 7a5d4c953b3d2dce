"""lm-eval integration: the ``droidspeak`` model backend, its CLI wrapper, and the YAMLs of our local tasks."""
