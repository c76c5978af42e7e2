"""Schedules: the per-target databases and their tasks (here), compiling with them (``pipeline``) and
finding them (``search``). Imports run one way: ``pipeline`` -> ``search`` -> ``database``, ``tasks``."""
