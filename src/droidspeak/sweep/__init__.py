"""The Hydra-facing jobs: config schemas, one evaluated sweep point, and the profiling job; each writes result rows."""
