"""contract: the configuration function's input dict, output dict and their checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netrain.define.contract import (
    EXTRA_INPUT_KEYS,
    INPUT_KEYS,
    OPTIONAL_OUTPUT,
    REQUIRED_OUTPUT,
    NetworkConfig,
    build_input,
    call_config_function,
    network_seed,
    validate_output,
)
from netrain.errors import ContractError, NetrainError

MODEL = "classifier.clu_one"
SEED_INPUT_KEYS = ("class", "architecture", "nb_epoch", "epoch_samples", "nnets",
                   "intelligent", "wpath", "archpath", "metricspath", "trainingrun")
SEED_OUTPUT_KEYS = ("name", "nb_epoch", "archpath", "wpath", "metricspath", "model_generator",
                    "training_generator", "evaluation_generator", "optimizer", "loss")


def build_model() -> None:
    return None


def valid_output(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "clu_one_net",
        "nb_epoch": 3,
        "archpath": "/b/archs",
        "wpath": Path("/b/weights"),
        "metricspath": "/b/metrics",
        "model_generator": build_model,
        "training_generator": ([[0.0], [1.0]], [0, 1]),
        "evaluation_generator": None,
        "optimizer": "adam",
        "loss": "mse",
    }
    out.update(changes)
    return out


def test_contract_keys_match_the_seed() -> None:
    assert INPUT_KEYS == SEED_INPUT_KEYS
    assert set(REQUIRED_OUTPUT) == set(SEED_OUTPUT_KEYS)
    assert not set(OPTIONAL_OUTPUT) & set(REQUIRED_OUTPUT)


def test_valid_output_passes() -> None:
    cfg = validate_output(valid_output(), MODEL)
    assert isinstance(cfg, NetworkConfig)
    assert cfg.name == "clu_one_net"
    assert cfg.nb_epoch == 3
    assert cfg.archpath == Path("/b/archs") and cfg.wpath == Path("/b/weights")
    assert cfg.metricspath == Path("/b/metrics")
    assert cfg.model_generator is build_model
    assert cfg.optimizer == "adam" and cfg.loss == "mse"
    assert cfg.metrics == [] and cfg.batch_size is None and cfg.verbose == 0
    assert cfg.unknown_keys == () and cfg.pack is None


def test_valid_output_with_every_optional_key() -> None:
    cfg = validate_output(valid_output(
        metrics=("accuracy",), batch_size=32, callbacks=[], params={"lr": 0.01, "units": 8},
        early_stopping={"monitor": "val_loss", "patience": 2, "threshold": 0.1},
        validation_steps=4, verbose=2, seed=42, tags={"k": 1}, pack=True,
        evaluation_generator=([[0.0]], [0]),
    ), MODEL)
    assert cfg.pack is True
    assert cfg.metrics == ["accuracy"]
    assert cfg.batch_size == 32 and cfg.validation_steps == 4 and cfg.verbose == 2
    assert cfg.seed == 42 and cfg.tags == {"k": "1"}
    assert cfg.scalar_params() == {
        "name": "clu_one_net", "nb_epoch": 3, "optimizer": "adam", "loss": "mse",
        "batch_size": 32, "metrics": "accuracy", "early_stopping.monitor": "val_loss",
        "early_stopping.patience": 2, "early_stopping.threshold": 0.1, "lr": 0.01, "units": 8,
    }


def test_name_is_stripped() -> None:
    assert validate_output(valid_output(name="  net "), MODEL).name == "net"


@pytest.mark.parametrize("key", REQUIRED_OUTPUT)
def test_each_missing_required_key_names_key_and_model(key: str) -> None:
    out = valid_output()
    del out[key]
    with pytest.raises(ContractError) as exc:
        validate_output(out, MODEL)
    msg = str(exc.value)
    assert repr(key) in msg
    assert MODEL in msg
    assert "missing" in msg


def test_all_missing_keys_are_listed_at_once() -> None:
    with pytest.raises(ContractError) as exc:
        validate_output({}, MODEL)
    for key in REQUIRED_OUTPUT:
        assert repr(key) in str(exc.value)


def test_contract_error_is_a_netrain_error() -> None:
    with pytest.raises(NetrainError):
        validate_output({}, MODEL)


@pytest.mark.parametrize("key, value", [
    ("name", 5),
    ("name", ""),
    ("name", "   "),
    ("name", None),
    ("nb_epoch", 0),
    ("nb_epoch", -1),
    ("nb_epoch", "5"),
    ("nb_epoch", True),
    ("nb_epoch", 2.0),
    ("archpath", None),
    ("wpath", 3),
    ("metricspath", ""),
    ("model_generator", "build_model"),
    ("model_generator", None),
    ("training_generator", None),
    ("training_generator", 5),
    ("evaluation_generator", 5),
    ("optimizer", None),
    ("optimizer", ""),
    ("optimizer", 3),
    ("loss", 3),
    ("loss", None),
    ("loss", "  "),
    ("metrics", "accuracy"),
    ("metrics", 5),
    ("batch_size", 0),
    ("batch_size", "32"),
    ("batch_size", True),
    ("callbacks", 5),
    ("params", [1, 2]),
    ("params", {"layers": [1, 2]}),
    ("params", {"nested": {"a": 1}}),
    ("early_stopping", ["patience"]),
    ("early_stopping", {"patiance": 3}),
    ("validation_steps", 0),
    ("verbose", 5),
    ("verbose", "1"),
    ("seed", "1"),
    ("tags", ["a"]),
    ("pack", "yes"),
    ("pack", 1),
])
def test_wrong_types_name_the_key_and_the_model(key: str, value: Any) -> None:
    with pytest.raises(ContractError) as exc:
        validate_output(valid_output(**{key: value}), MODEL)
    msg = str(exc.value)
    assert MODEL in msg
    # the early_stopping check names the offending key inside the dict instead
    expected = "patiance" if value == {"patiance": 3} else key
    assert expected in msg


@pytest.mark.parametrize("value", [None, [], ["a"], "dict", 3, (1, 2)])
def test_non_dict_return_is_refused(value: Any) -> None:
    with pytest.raises(ContractError) as exc:
        validate_output(value, MODEL, where="my_config_fn")
    msg = str(exc.value)
    assert MODEL in msg and "my_config_fn" in msg
    assert type(value).__name__ in msg and "not a dict" in msg


def test_unknown_keys_are_reported_not_refused() -> None:
    cfg = validate_output(valid_output(lr=0.1, extra_thing=1), MODEL)
    assert cfg.unknown_keys == ("extra_thing", "lr")


@pytest.mark.parametrize("data", [
    lambda: None,
    iter([1, 2]),
    [1, 2],
])
def test_training_data_forms(data: Any) -> None:
    assert validate_output(valid_output(training_generator=data), MODEL).training_generator \
        is data


def test_optimizer_and_loss_objects_are_accepted() -> None:
    class Adam:
        def get_config(self) -> dict[str, Any]:
            return {}

    def my_loss(y: Any, p: Any) -> Any:
        return 0

    cfg = validate_output(valid_output(optimizer=Adam(), loss=my_loss), MODEL)
    assert cfg.scalar_params()["optimizer"] == "Adam"
    assert cfg.scalar_params()["loss"] == "my_loss"


# ----------------------------------------------------------------------------- inputs

def make_input(**changes: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        cls="classifier", architecture="clu_one", nb_epoch=5, epoch_samples=1000, nnets=10,
        intelligent=True, batch_dir=Path("/t/b1"), batch="b1", trainingrun=4, net_index=2,
    )
    kwargs.update(changes)
    return build_input(**kwargs)


def test_build_input_has_every_seed_key() -> None:
    d = make_input()
    for key in SEED_INPUT_KEYS:
        assert key in d
    for key in EXTRA_INPUT_KEYS:
        assert key in d
    assert d["class"] == "classifier" and d["architecture"] == "clu_one"
    assert d["nb_epoch"] == 5 and d["epoch_samples"] == 1000 and d["nnets"] == 10
    assert d["intelligent"] is True and d["trainingrun"] == 4 and d["net_index"] == 2
    assert d["wpath"] == "/t/b1/weights"
    assert d["archpath"] == "/t/b1/archs"
    assert d["metricspath"] == "/t/b1/metrics"
    assert d["batch"] == "b1" and d["batch_dir"] == "/t/b1" and d["retrain_of"] is None


def test_network_seed_is_deterministic_and_in_range() -> None:
    a = make_input()["seed"]
    assert a == make_input()["seed"] == network_seed("b1", "classifier.clu_one", 4, 2)
    assert isinstance(a, int) and 0 <= a < 2**31


def test_network_seed_differs_across_networks_tasks_models_and_batches() -> None:
    seeds = {make_input(net_index=i)["seed"] for i in range(50)}
    assert len(seeds) == 50
    base = make_input()["seed"]
    assert make_input(trainingrun=5)["seed"] != base
    assert make_input(architecture="other")["seed"] != base
    assert make_input(batch="b2")["seed"] != base


# ------------------------------------------------------------------ calling the function

def test_call_config_function_passes_a_copy_and_validates() -> None:
    inputs = make_input()
    seen: list[dict[str, Any]] = []

    def model_configuration_function(d: dict[str, Any]) -> dict[str, Any]:
        seen.append(d)
        d["class"] = "mutated"
        return valid_output(name=f"{d['architecture']}_{d['trainingrun']}")

    cfg = call_config_function(model_configuration_function, inputs, MODEL)
    assert cfg.name == "clu_one_4"
    assert inputs["class"] == "classifier"
    assert seen[0] is not inputs


def test_call_config_function_wraps_exceptions() -> None:
    def model_configuration_function(d: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no such architecture\nsecond line")

    with pytest.raises(ContractError) as exc:
        call_config_function(model_configuration_function, make_input(), MODEL)
    msg = str(exc.value)
    assert MODEL in msg
    assert "model_configuration_function" in msg
    assert "ValueError" in msg and "no such architecture" in msg
    assert "second line" not in msg
    assert isinstance(exc.value.__cause__, ValueError)


def test_call_config_function_exception_without_message() -> None:
    def fn(d: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError()

    with pytest.raises(ContractError, match=r"RuntimeError: \(no message\)"):
        call_config_function(fn, make_input(), MODEL)


def test_call_config_function_names_the_function_on_a_bad_return() -> None:
    def my_fn(d: dict[str, Any]) -> dict[str, Any]:
        out = valid_output()
        del out["loss"]
        return out

    with pytest.raises(ContractError) as exc:
        call_config_function(my_fn, make_input(), MODEL)
    assert "my_fn" in str(exc.value) and "'loss'" in str(exc.value) and MODEL in str(exc.value)
