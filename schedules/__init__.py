"""Tuning: task extraction, MetaSchedule runs, the per-target schedule databases, and compiling with them."""
