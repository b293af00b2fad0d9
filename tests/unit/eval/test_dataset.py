"""One labelled-dataset reader (`funnel.labelled`) behind both views: the funnel's (id, text, labels)
and eval's (Post, labels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from funnel.labelled import LabelledError, load_labeled, parse_labelled
from worker.eval.scoring import DatasetError, load_dataset

LINES = [
    '{"id": "a", "text": "x", "labels": {"spam": 1, "hate": 0}}',
    "",
    '{"id": "b", "text": "y", "label": true, "policy": "hate", "lang": "en"}',
    '{"text": "z", "labels": {"spam": 0}}',
]


def test_both_views_read_the_same_labels(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(LINES[:3]) + "\n", encoding="utf-8")
    funnel_view = load_labeled(path)
    eval_view = load_dataset(path, ["spam", "hate"])
    assert (
        [(p.id, p.text, p.labels) for p in funnel_view]
        == [(i.post.id, i.post.text, i.labels) for i in eval_view]
        == [("a", "x", {"spam": 1, "hate": 0}), ("b", "y", {"hate": 1})]
    )
    assert eval_view[1].post.lang == "en", "the rest of the line is the post's"


def test_rows_keep_the_line_and_the_funnel_names_a_post_without_id_by_it() -> None:
    rows = parse_labelled(LINES, "set.jsonl")
    assert [(r.where, r.number) for r in rows] == [("set.jsonl:1", 1), ("set.jsonl:3", 3), ("set.jsonl:4", 4)]


def test_a_line_without_id_is_a_funnel_post_but_not_an_eval_post(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    assert load_labeled(path)[-1].id == "4"
    with pytest.raises(DatasetError, match=r"set.jsonl:4: not a post"):
        load_dataset(path, ["spam", "hate"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "d", "text": "w", "labels": {"spam": 2}}', "must be 0 or 1"),
        ('{"id": "d", "text": "w"}', "needs 'labels'"),
        ('{"id": "d", "labels": {"spam": 1}}', "no 'text'"),
        ("{not json", "not JSON"),
    ],
)
def test_the_funnel_view_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "text": "fine", "labels": {}}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(LabelledError, match=message) as caught:
        load_labeled(path)
    assert f"{path}:2" in str(caught.value)


def test_an_unreadable_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl", ["spam"])
