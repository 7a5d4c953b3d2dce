"""The embedded model family and its synthetic tasks: everything the experiments need offline, on a laptop.

``droidspeak.zoo.family.build_family(cfg)`` builds (once per recipe, cached by its hash) a base Llama and its
fine-tuned variants, the task JSONL files they are scored on, and the measured reuse phenomenon per pair.

- ``world`` (the synthetic world), ``tokenizer`` (its word-level tokenizer), ``tasks`` and ``long_tasks`` (the task
  generators: short synthetic ones, and LongBench-style ones for a real tokenizer), ``task_metrics`` (F1, exact
  match, Rouge-L, edit similarity), ``corpus`` (training examples);
- ``recipe`` (a family's typed recipe and its hash), ``train`` (models, LoRA, optimisation), ``gguf_base`` (a
  pretrained base from a GGUF in a pip package), ``builder`` (trains a family or an extension into a folder),
  ``measure`` (a task's questions for the engine, and the family's measured phenomenon), ``cards`` (model cards),
  ``family`` (names, installs and serves a built family).
"""
