"""The embedded model family and its synthetic tasks: everything the experiments need offline, on a laptop.

``droidspeak.zoo.family.build_family(cfg)`` builds (once per recipe, cached by its hash) a base Llama and its
fine-tuned variants, the task JSONL files they are scored on, and the measured reuse phenomenon per pair.
"""
