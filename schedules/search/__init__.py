"""Finding schedules: tuning, how candidates are built and timed, re-timing, transfer, the cost model."""
