"""Shared fixtures: self-made checkpoints in the exact AugReg / big_vision formats."""

import numpy as np
import pytest

from tests import reference as ref

TINY = dict(width=32, depth=2, heads=4, mlp=64, patch=4, grid=7, classes=10)


@pytest.fixture(scope="session")
def augreg_arrays():
  return ref.augreg_arrays(0, **TINY)


@pytest.fixture(scope="session")
def augreg_file(tmp_path_factory, augreg_arrays):
  path = tmp_path_factory.mktemp("ckpt") / "augreg_tiny.npz"
  np.savez(path, **augreg_arrays)
  return path


@pytest.fixture
def images():
  def make(n, h, w, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, 3)).astype(np.float32)
  return make
