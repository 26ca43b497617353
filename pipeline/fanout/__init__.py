"""Floor 4, running on Ray: a plan's pairs fanned out to warm VGG-19 actors.

`runner` (`run_job`, `run_plan`), `driver` (the run loop, `RunSummary`), `pool` (the elastic actor
pool), `resources` (what the actors need, and the pool's start), `actors` (`PairActor`, and the
one way an actor starts), `worker` (a call's pairs into rows), `rows` (every row built here),
`failures` (Ray's errors read by type), `session` (joining or starting Ray), `stage` (a Ray Data
stage), `submit` (the Ray Jobs API) and `metrics` (the run's, through Ray's). Ray is imported
here and in the web app only."""
