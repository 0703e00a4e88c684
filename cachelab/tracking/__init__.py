"""Where a job's results go, one module a concern: its provenance, its files (result.json, trace.csv,
PNGs), its W&B run, the tables printed, and the summary of its sweep.

A job writes its files as soon as it finishes, result.json last, and rewrites its sweep's summary, so
nothing is lost when a later job fails or the sweep is interrupted.
"""
