"""Appeals: a contested verdict re-judged by tier 2 at high effort, with the author's statement as context."""
