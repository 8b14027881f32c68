import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hypothesis import settings  # noqa: E402

settings.register_profile("default", deadline=None, max_examples=25, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


import gc  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after each test module. Every XLA:CPU executable
    keeps its own memory mappings, and one process running the whole suite would
    otherwise reach the kernel's limit (``vm.max_map_count``, 65,530 by default), where
    the next compilation crashes the interpreter (a segmentation fault in XLA)."""
    yield
    jax.clear_caches()
    gc.collect()
