"""`modstream eval`: `scoring` (dataset, pair results, metrics, report), `run` (judge the pairs through the
worker's cascade), `orchestrate` (the command's steps; printing is worker.cli.eval's),
`teacher` (audit records as labelled posts for `funnel fit --from-audit`)."""
