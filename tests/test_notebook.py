"""The Colab notebook runs top to bottom, headless, on the demo's checkpoint."""

import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests import runner

pytestmark = pytest.mark.xdist_group("demo")  # one demo run per worker


def test_notebook_runs(demo_runs, tmp_path, monkeypatch):
  path = os.path.join(runner.REPO, "notebooks", "mspe_eval.ipynb")
  nb = nbformat.read(path, as_version=4)
  monkeypatch.setenv("MSPE_WORKDIR", str(demo_runs["root"] / "mspe"))
  monkeypatch.setenv("MSPE_EVAL_EXAMPLES", "200")
  monkeypatch.setenv("MSPE_SIZES", "7,14,28")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  # the kernel spec runs "python": make it this interpreter (the venv) even if not activated
  monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  monkeypatch.setenv("MSPE_NOTEBOOK_OUT", str(tmp_path))
  client = NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": runner.REPO}})
  client.execute()
  outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
  assert "base kernels (1, 2, 3, 4)" in outputs
  assert "| mspe |" in outputs
  images = [o for c in nb.cells for o in c.get("outputs", [])
            if "data" in o and "image/png" in o["data"]]
  assert len(images) == 2  # the curves and the image grid
  assert os.path.exists(tmp_path / "eval" / "results.json")
