"""Every config file composes, and every task and precision file instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from qwen_evals.backends.precision import Precision
from qwen_evals.core.config import register_resolvers
from tests.conftest import CONF

register_resolvers()


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("precision", choices("precision"))
def test_precisions_instantiate(precision):
    built = instantiate(composed(f"precision={precision}").precision)
    assert isinstance(built, Precision) and built.name == precision


@pytest.mark.parametrize("task", choices("task"))
def test_tasks_instantiate_with_local_data(task, shared_data):
    built = instantiate(composed(f"task={task}", f"data_dir={shared_data}").task)
    # a benchmark without its own folder (react: Qwen's exam is not public) gets data_dir itself
    expected = shared_data / task if (shared_data / task).is_dir() else shared_data
    assert built.name == task and Path(built.data_dir) == expected


@pytest.mark.parametrize("model", [m for m in choices("model") if m != "hf"])
def test_models_compose_with_their_constructor_arguments(model):
    import inspect

    from hydra.utils import get_class

    from qwen_evals.cli.checks import RECORD_ONLY_KEYS

    cfg = composed(f"model={model}").model
    accepted = set(inspect.signature(get_class(cfg._target_)).parameters)
    assert set(RECORD_ONLY_KEYS) <= set(cfg)  # every model records its label and step
    assert set(cfg) - {"_target_", *RECORD_ONLY_KEYS} <= accepted
    assert cfg.name and cfg.label


def test_generic_model_is_named_after_its_path():
    model = composed("model=hf", "model.path=/models/my-ckpt/").model
    assert model.name == model.label == "my-ckpt"
