"""`modstream funnel score|calibrate`: run the funnel on JSONL posts without Kafka.

modstream funnel score --policies policies --input posts.jsonl --output scored.jsonl
modstream funnel calibrate --policies policies --labeled datasets/funnel_dev.jsonl --target-recall 0.98
modstream funnel evaluate --policies policies --labeled datasets/eval_sample.jsonl
modstream funnel fit --policies policies --labeled a.jsonl --labeled b.jsonl [--holdout 0.2] [--seed N]
modstream funnel recall --from-audit verdicts.jsonl [--policies policies]
"""

from __future__ import annotations

import click

from worker.cli.funnel_calibrate import calibrate_command
from worker.cli.funnel_evaluate import evaluate_command
from worker.cli.funnel_fit import fit_command
from worker.cli.funnel_recall import recall_command
from worker.cli.funnel_score import score_command


@click.group("funnel")
def funnel_group() -> None:
    """The funnel on its own: score posts, calibrate thresholds."""


for _command in (score_command, evaluate_command, calibrate_command, fit_command, recall_command):
    funnel_group.add_command(_command)
