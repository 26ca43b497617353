"""Floor 5, `nst serve`: the web front end (FastAPI over warm Ray actors)."""
