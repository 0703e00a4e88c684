"""What the paper ablations in `experiments/` need beyond cachelab's policies: the indicator policies of
the TeaCache ablation, threshold matching at equal compute, and the committed results tables
(`python -m cachelab.reproduce`)."""
