"""lm-eval integration: ``backend`` (the ``droidspeak`` model backend), ``cli`` (``droidspeak-eval``, lm-eval's CLI
with it registered) and ``task_yaml`` (the YAMLs of our local tasks)."""
