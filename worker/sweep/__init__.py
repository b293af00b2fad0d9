"""`modstream sweep`: the back-scan. Re-judges a time range of the posts topic and publishes
superseding verdicts only where the decision changes (docs/workflow.md, "Back-scan sweep")."""
