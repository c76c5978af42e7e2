"""Hardware: the target registry (triples, presets, TVM targets, cross compilers) and remote boards."""
