"""The runtime: wraps a diffusers transformer, finds each call's step and CFG branch, asks the policies (a step
policy, then block and module policies inside what it computes), computes or stands in for each unit, and
accounts for the work. Nothing here is imported by ``cachelab.policies`` but ``parallel`` (the ranks' sums)."""
