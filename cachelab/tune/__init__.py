"""`python -m cachelab.tune`: for a quality target, the fastest setting of each policy, searched on tuning
prompts/seeds and validated on held-out ones; a table, a config per policy, tune.json and a W&B run."""
