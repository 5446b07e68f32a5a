"""spec: the --models and --tasks mini-languages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netrain.define.spec import (
    MAX_NNETS,
    ModelSpec,
    check_name,
    format_indices,
    parse_model_filter,
    parse_models,
    parse_tasks,
)
from netrain.errors import SpecError, UsageError

SEED_EXAMPLE = "classifier.clu_one=10, chransynth=32, autoencoder.classical=45"


def test_seed_example_carries_the_class_over() -> None:
    assert parse_models(SEED_EXAMPLE) == [
        ModelSpec("classifier", "clu_one", 10),
        ModelSpec("classifier", "chransynth", 32),
        ModelSpec("autoencoder", "classical", 45),
    ]


def test_seed_example_keys_and_slugs() -> None:
    specs = parse_models(SEED_EXAMPLE)
    assert [s.key for s in specs] == [
        "classifier.clu_one", "classifier.chransynth", "autoencoder.classical"]
    assert [s.slug for s in specs] == [
        "classifier-clu_one", "classifier-chransynth", "autoencoder-classical"]
    # the design's arithmetic: with --array 200, 17,400 networks
    assert sum(s.nnets for s in specs) * 200 == 17_400


def test_whitespace_around_items_names_and_counts_is_ignored() -> None:
    text = "  classifier.clu_one = 10 ,\tchransynth=32 ,autoencoder.classical =45  "
    assert parse_models(text) == parse_models(SEED_EXAMPLE)


def test_carry_over_follows_the_latest_class() -> None:
    specs = parse_models("a.x=1, y=2, b.z=3, w=4")
    assert [(s.cls, s.architecture) for s in specs] == [("a", "x"), ("a", "y"), ("b", "z"),
                                                        ("b", "w")]


def test_names_may_hold_digits_underscores_and_dashes() -> None:
    assert parse_models("Cls_2.arch-3_b=7") == [ModelSpec("Cls_2", "arch-3_b", 7)]


def test_spec_error_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_models("")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_models(text: str) -> None:
    with pytest.raises(SpecError, match="empty"):
        parse_models(text)


def test_missing_equals_names_the_item() -> None:
    with pytest.raises(SpecError, match=r"classifier\.clu_one") as exc:
        parse_models("classifier.clu_one")
    assert "=N" in str(exc.value)


@pytest.mark.parametrize("count", ["0", "-1", "-3", "abc", "1.5", "+3", "", "1e3", "3 4",
                                   "0x10", "1_000", "\uff13"])  # the last: a fullwidth 3
def test_bad_counts_are_refused_and_the_item_named(count: str) -> None:
    item = f"classifier.clu_one={count}"
    with pytest.raises(SpecError) as exc:
        parse_models(f"auto.enc=2, {item}")
    msg = str(exc.value)
    assert "classifier.clu_one" in msg
    assert "number of networks" in msg


def test_count_above_the_maximum() -> None:
    assert parse_models(f"a.b={MAX_NNETS}")[0].nnets == MAX_NNETS
    with pytest.raises(SpecError, match=str(MAX_NNETS + 1)):
        parse_models(f"a.b={MAX_NNETS + 1}")


def test_leading_zeros_are_a_whole_number() -> None:
    assert parse_models("a.b=007")[0].nnets == 7


@pytest.mark.parametrize("text", [
    "classifier.clu_one=10, classifier.clu_one=3",
    "classifier.clu_one=10, clu_one=3",
    "classifier.clu_one=10, autoencoder.x=1, classifier.clu_one=3",
])
def test_duplicates_are_refused(text: str) -> None:
    with pytest.raises(SpecError, match=r"classifier\.clu_one twice"):
        parse_models(text)


def test_same_architecture_in_two_classes_is_fine() -> None:
    specs = parse_models("classifier.x=1, autoencoder.x=2")
    assert [s.key for s in specs] == ["classifier.x", "autoencoder.x"]


@pytest.mark.parametrize("text, position", [
    (",a.b=1", 1),
    ("a.b=1,", 2),
    ("a.b=1,,c=2", 2),
    ("a.b=1, ,c=2", 2),
])
def test_stray_commas(text: str, position: int) -> None:
    with pytest.raises(SpecError, match=f"item {position} is empty"):
        parse_models(text)


def test_carry_over_without_a_class_before() -> None:
    with pytest.raises(SpecError, match="no class") as exc:
        parse_models("clu_one=10, classifier.x=2")
    assert "clu_one=10" in str(exc.value)


@pytest.mark.parametrize("bad", [
    "clu one",
    "clu'one",
    'clu"one',
    "$(x)",
    "a;b",
    "a\nb",
    "modèle",
    "clu/one",
    "a*",
    "`id`",
    "",
])
@pytest.mark.parametrize("where", ["architecture", "class", "carried"])
def test_unsafe_names_are_refused_and_named(bad: str, where: str) -> None:
    text = {
        "architecture": f"classifier.{bad}=3",
        "class": f"{bad}.clu_one=3",
        "carried": f"classifier.ok=1, {bad}=3",
    }[where]
    with pytest.raises(SpecError) as exc:
        parse_models(text)
    if bad.strip():
        assert repr(bad)[1:-1] in str(exc.value)


def test_dotted_architecture_is_refused() -> None:
    with pytest.raises(SpecError, match=r"b\.c"):
        parse_models("a.b.c=3")


def test_check_name_refuses_a_trailing_newline() -> None:
    with pytest.raises(SpecError):
        check_name("abc\n", "model class")


def test_class_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(SpecError):
        parse_models("classifier\n.clu_one=3")


def test_check_name_returns_the_name_and_says_what() -> None:
    assert check_name("ok_1-a", "x") == "ok_1-a"
    with pytest.raises(SpecError, match="model class 'a b'"):
        check_name("a b", "model class")


# ------------------------------------------------------------------------------ tasks

@pytest.mark.parametrize("text, expected", [
    ("0-3,7", [0, 1, 2, 3, 7]),
    ("5", [5]),
    (" 7 , 0-1 ", [0, 1, 7]),
    ("3-3", [3]),
    ("2,1,2,0-2", [0, 1, 2]),
])
def test_parse_tasks(text: str, expected: list[int]) -> None:
    assert parse_tasks(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("3-1", "backwards"),
    ("a", "'a'"),
    ("", "empty"),
    ("  ", "empty"),
    ("1,,2", "''"),
    ("-1", "'-1'"),
    ("1-", "'1-'"),
    ("0-99999999", "too large"),
    ("1.5", "'1.5'"),
])
def test_parse_tasks_errors(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_tasks(text)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("indices, text", [
    ([], ""),
    ([4], "4"),
    ([0, 1, 2, 3, 7], "0-3,7"),
    ([7, 3, 2, 1, 0, 3], "0-3,7"),
    ([1, 3, 5], "1,3,5"),
    ([0, 1, 5, 6, 9], "0-1,5-6,9"),
])
def test_format_indices(indices: list[int], text: str) -> None:
    assert format_indices(indices) == text


def test_format_indices_for_a_message() -> None:
    """The packed trainer's "packed N networks (0-3, 7, 9-10)" line."""
    assert format_indices([0, 1, 2, 3, 7, 9, 10], ", ") == "0-3, 7, 9-10"
    assert format_indices([5], ", ") == "5"
    assert format_indices([], ", ") == ""


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=300), min_size=1))
def test_format_parse_round_trip(xs: set[int]) -> None:
    text = format_indices(list(xs))
    assert parse_tasks(text) == sorted(xs)
    assert format_indices(parse_tasks(text)) == text


# ----------------------------------------------------------------------- model filter

@pytest.mark.parametrize("text, expected", [
    ("classifier.clu_one", ["classifier.clu_one"]),
    ("classifier.clu_one, chransynth", ["classifier.clu_one", "classifier.chransynth"]),
    ("classifier.clu_one, autoencoder.classical",
     ["classifier.clu_one", "autoencoder.classical"]),
])
def test_parse_model_filter(text: str, expected: list[str]) -> None:
    assert parse_model_filter(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("", "empty item"),
    ("a.b,", "empty item"),
    ("clu_one", "needs a class"),
    ("a.b c", "'b c'"),
    ("a$(x).b", "'a$(x)'"),
    ("classifier.clu_one=10", "has a count"),
    (SEED_EXAMPLE, "write 'classifier.clu_one'"),
])
def test_parse_model_filter_errors(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_model_filter(text)
    assert fragment in str(exc.value)
