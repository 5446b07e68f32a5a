"""The packed trainer on Keras' jax backend (a GPU node's Keras may run on JAX, without
TensorFlow): the equivalence, early stopping and resume tests of test_packed,
test_packed_resume and test_packed_streams (a selection: they take minutes), run again in a
process whose KERAS_BACKEND is jax.

Not rerun there: the custom train_step fallback (the test's model calls tensorflow's
train_step signature) and the variable-count guard (on jax every trainable variable gets a
gradient, zero where none reaches it, which is what keras' own jax trainer applies too)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SELECTED = ("dense_weights_match_alone or bn_dropout_and_conv or early_stopping_per_network "
            "or (resumes_to_the_same_weights and False-True) "
            "or (dropout_resumes_with_each and True) "
            # generator data (test_packed_streams): a generator function, a PyDataset, a
            # generator that ends, BatchNorm and Dropout, a signal and the resume
            "or generator-function or (match_the_sequential and pydataset) "
            "or generator_that_ends or bn_dropout_losses or signal_mid_epoch_then_resume")


def test_packed_trainer_on_the_jax_backend(tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
         "--basetemp", str(tmp_path / "t"), "-k", SELECTED,
         "tests/integration/test_packed.py", "tests/integration/test_packed_resume.py",
         "tests/integration/test_packed_streams.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    tail = p.stdout[-3000:] + p.stderr[-2000:]
    assert p.returncode == 0, tail
    passed = re.search(r"(\d+) passed", p.stdout)
    assert passed and int(passed.group(1)) >= 12, tail
    assert "failed" not in p.stdout.splitlines()[-1] and "skipped" not in p.stdout.splitlines()[-1]
