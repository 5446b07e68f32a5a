"""params: the one list of task parameters and the one parser of true/false words."""

from __future__ import annotations

import click
import pytest

from netrain.define.params import (
    FALSE_WORDS,
    OPTIONAL_DEFAULTS,
    TASK_PARAM_NAMES,
    TASK_PARAMS,
    TRUE_WORDS,
    parse_bool,
)


@pytest.mark.parametrize("word", [*TRUE_WORDS, *FALSE_WORDS, "TRUE", " No ", "Off", "Y",
                                  "maybe", "2", "truthy", "none"])
def test_parse_bool_agrees_with_click(word: str) -> None:
    """The CLI (click.BOOL) and the task (parse_bool) read --intelligent the same way."""
    try:
        expected: bool | None = click.BOOL.convert(word, None, None)
    except click.BadParameter:
        expected = None
    if expected is None:
        with pytest.raises(ValueError, match="expected true or false"):
            parse_bool(word)
    else:
        assert parse_bool(word) is expected


def test_click_knows_no_word_parse_bool_does_not() -> None:
    assert set(click.BOOL.bool_states) == {*TRUE_WORDS, *FALSE_WORDS}


def test_task_params() -> None:
    assert TASK_PARAM_NAMES[:7] == ("class", "architecture", "nb_epoch", "epoch_samples",
                                    "nnets", "intelligent", "trainingrun")
    assert OPTIONAL_DEFAULTS == {"net_index": "-1", "retrain_of": "none", "from_weights": "none",
                                 "pack": "false"}
    assert all(p.type in (int, str, bool) for p in TASK_PARAMS)
