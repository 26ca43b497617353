"""Floor 5, `nst report`: a job's pictures and loss curves without a server (its plots are the
web gallery's too)."""
