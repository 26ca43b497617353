"""Floor 3, the job model: what a job computes, decided before anything runs.

Job specs (`spec`) and how they are read (`load`), presets, the painting catalogue, the plan of
pairs with their stable ids (`plan`, with `plan_job`), dataset mode, compute estimates, the
Kaggle download, the run options, and what a job's viewers may read.

Configuration, one rule: what a user writes (a job spec and its sections, `spec.py` and
`dataset_mode.DatasetSpec`) is a pydantic model that refuses unknown keys; what the code passes
around (`StyleParams`, `RunOptions`, `MaskSettings`, `S3Settings`, the web app's `Settings`) is a
frozen dataclass. `StyleParams` is both: the one source of the defaults, it checks itself when a
preset, a spec's `params:`, an option or a form field makes one (`presets.resolve`)."""
