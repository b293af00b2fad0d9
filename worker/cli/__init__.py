"""The `modstream` command line: `main` assembles the group; one module per command (`funnel_*` per
`modstream funnel` subcommand, sharing `funnel_common`)."""
