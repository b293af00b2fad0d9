"""The review queue (docs/workflow.md, "Review queue and console"): the store the console and the
apply consumer read the `review`, `review-decisions` and `audit` topics into;
`modstream review apply` (reviewer decisions -> superseding verdicts) and `modstream review serve`
(the reviewer's console)."""
