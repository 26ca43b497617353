"""Floor 5, the command line: `nst` and its subcommands. Only this package prints and exits.

`main` runs a command, `parser` builds the arguments (`run_options`: those `nst run` and
`nst submit` share), and one module per group of commands does the work: `stylize`, `jobs` (plan,
run), `cluster` (submit, status, logs, stop), `serve`, `report`, `data` (fetch)."""
