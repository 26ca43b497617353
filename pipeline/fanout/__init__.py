"""Floor 4, running on Ray: a plan's pairs fanned out to warm VGG-19 actors.

The worker that turns a pair into a row, the elastic actor pool, the run loop, the Ray Data
stage, submission to a cluster, and the Python API. Ray is imported here and in the web app only."""
