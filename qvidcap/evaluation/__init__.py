"""06-07: pycocoevalcap scores, the baselines, published VATEX results, evaluation of a checkpoint
over a split, and the per-clip error analysis with its plots."""
