"""00: where the study runs: environment and paths, install checks, links and badges, notebook helpers,
progress bars, the papermill study runner and the Kaggle kernel."""
