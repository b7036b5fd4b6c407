"""Child process for the disk-full test: checkpoints into a small tmpfs until it is full.

Run inside a mount namespace with ``DIR`` a tmpfs of a few hundred kB. Prints one JSON line.
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from mspe_jax import ckpt_manager  # noqa: E402


def main(directory):
  rng = np.random.default_rng(0)
  state = {"params": {"w": rng.standard_normal(40_000).astype(np.float32)}, "step": 1}
  ckpt = ckpt_manager.Checkpointer(directory, keep=5)
  ckpt.save(1, state)
  ckpt.wait()
  error = None
  try:
    state2 = {"params": {"w": state["params"]["w"] + 1}, "step": 2}
    ckpt.save(2, state2)
    ckpt.wait()
  except ckpt_manager.CheckpointSaveError as e:
    error = str(e)
  ckpt.close()
  target = ckpt_manager.abstract_like(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  restored = ckpt_manager.Checkpointer(directory).restore_latest(target)
  print(json.dumps({"error": error, "steps": ckpt_manager._step_dirs(directory),  # noqa: SLF001
                    "restored_step": restored[0],
                    "intact": bool(np.array_equal(restored[1]["params"]["w"],
                                                  state["params"]["w"]))}))


if __name__ == "__main__":
  main(sys.argv[1])
