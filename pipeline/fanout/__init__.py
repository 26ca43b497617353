"""Floor 4, running on Ray: a plan's pairs fanned out to warm VGG-19 actors.

`session` (joining or starting Ray), `actors` (the one way an actor starts), `failures` (Ray's
errors read by type), `worker` (a pair into a row), `pool` (the elastic actor pool), `resources`
(what the actors need, and the pool's start), `driver` (the run loop), `runner` (`run_plan`),
`stage` (a Ray Data stage), `submit` (the Ray Jobs API) and `api` (the Python API). Ray is
imported here and in the web app only."""
