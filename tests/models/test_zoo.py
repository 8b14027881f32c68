"""The Flax zoo: every model builds, takes its input shape, and the small ones match
the shipped checkpoints' parameter trees."""

import jax
import jax.numpy as jnp
import pytest

from redy_jax.checkpoint import shipped
from redy_jax.models import INPUT_SHAPES, MODELS, SMALL_MODELS, create_model, load_checkpoint


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_give_logits_and_load_their_checkpoint(name):
    model = create_model(name)
    x = jax.ShapeDtypeStruct((2, *INPUT_SHAPES[name]), jnp.float32)  # shapes only: no compile
    v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    assert jax.eval_shape(model.apply, v, x).shape == (2, 10)
    if shipped(name).exists():
        m, variables, record = load_checkpoint(name)
        assert record["model"] == name
        assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(v)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="model must be one of"):
        create_model("resnet1000")
    assert set(SMALL_MODELS) <= set(MODELS)
