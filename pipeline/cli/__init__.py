"""Floor 5, the command line: `nst` and its subcommands. Only this package prints and exits."""
