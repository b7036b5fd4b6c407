"""Child process for the disk-full test: checkpoints until the disk refuses a write.

``DIR`` is a tmpfs of a few hundred kB (the test mounts it in a mount namespace), or, with
``--fsize-limit`` where mounting is not allowed, a normal directory and the second save runs
under a 64 kB file-size limit (writes then fail with EFBIG). Prints one JSON line.
"""

import json
import os
import resource
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from mspe_jax import checkpointer, jax_utils  # noqa: E402


def main(directory):
  rng = np.random.default_rng(0)
  state = {"params": {"w": rng.standard_normal(40_000).astype(np.float32)}, "step": 1}
  ckpt = checkpointer.Checkpointer(directory, keep=5)
  ckpt.save(1, state)
  ckpt.wait()
  error = None
  limit = resource.getrlimit(resource.RLIMIT_FSIZE)
  if "--fsize-limit" in sys.argv:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, limit[1]))
  try:
    state2 = {"params": {"w": state["params"]["w"] + 1}, "step": 2}
    ckpt.save(2, state2)
    ckpt.wait()
  except checkpointer.CheckpointSaveError as e:
    error = str(e)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limit)
  ckpt.close()
  target = jax_utils.abstract_like(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  restored = checkpointer.Checkpointer(directory).restore_latest(target)
  print(json.dumps({"error": error, "steps": checkpointer._step_dirs(directory),  # noqa: SLF001
                    "restored_step": restored[0],
                    "intact": bool(np.array_equal(restored[1]["params"]["w"],
                                                  state["params"]["w"]))}))


if __name__ == "__main__":
  main(sys.argv[1])
