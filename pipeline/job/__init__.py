"""Floor 3, the job model: what a job computes, decided before anything runs.

Job specs and presets, the painting catalogue, the plan of pairs with their stable ids, dataset
mode, compute estimates, the Kaggle download, the run options, and what a job's viewers may read."""
