"""The README's API snippet runs as printed, on the shipped model."""

import os
import re
import subprocess
import sys

from tests import runner


def test_readme_snippet_runs():
  text = open(os.path.join(runner.REPO, "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  snippet = next(b for b in blocks if "assets/fashion_mnist_vit.npz" in b)
  proc = subprocess.run([sys.executable, "-c", snippet], cwd=runner.REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0] == "(2, 10) ['encoded', 'pre_logits', 'tokens']"
  assert lines[1] == "Plan(kernel_hw=(3, 5), grid=(7, 7), kernel_index=2, input_hw=(21, 35))"
  assert lines[2] == "(9, 18, 3, 128)"
