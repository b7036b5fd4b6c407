"""The ImageNet recipe end to end on self-made files of the real formats: an AugReg-layout
ViT/16 at 224 px and a TFDS ``imagenet2012`` (JPEGs of many sizes, 1000 classes)."""

import json

import numpy as np
import pytest

from tests import reference, runner


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
  import tensorflow_datasets as tfds
  root = tmp_path_factory.mktemp("tfds")
  rng = np.random.default_rng(0)

  def examples(n, split):
    for i in range(n):
      h, w = (int(v) for v in rng.integers(120, 400, 2))
      yield f"{split}{i}", {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                            "label": int(rng.integers(1000)), "file_name": f"{split}_{i}.JPEG"}

  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(num_classes=1000),
      "file_name": tfds.features.Text()})
  tfds.dataset_builders.store_as_tfds_dataset(
      name="imagenet2012", version="5.1.0", features=features, data_dir=str(root),
      split_datasets={"train": list(examples(12, "train")),
                      "validation": list(examples(6, "validation"))})
  return root


@pytest.fixture(scope="module")
def augreg_vit16(tmp_path_factory):
  path = tmp_path_factory.mktemp("augreg") / "augreg_vit16_224.npz"
  np.savez(path, **reference.augreg_arrays(1, width=192, depth=2, heads=3, mlp=768, patch=16,
                                           grid=14, classes=1000, scale=0.05))
  return path


def test_vit_b_recipe_trains_and_evaluates(tmp_path, fake_imagenet, augreg_vit16):
  work = tmp_path / "run"
  proc = runner.run_script("train.py", "configs/vit_b_mspe.py:smoke", work,
                           {"init_file": augreg_vit16, "data.data_dir": fake_imagenet,
                            "progress_bar": False})
  out = runner.summary(proc)
  assert out["step"] == 3 and out["programs/bucket"] == 4 and out["programs/encoder"] == 1
  params = runner.npz(work / "model.npz")
  assert [params[f"mspe/embedding_{i}/kernel"].shape[0] for i in range(4)] == [2, 4, 8, 16]
  assert "eval/top1_56x56" in out
  proc = runner.run_script("eval.py", "configs/vit_b_eval.py:smoke", work,
                           {"pretrained": augreg_vit16,
                            "data.data_dir": fake_imagenet, "progress_bar": False})
  doc = json.loads((work / "eval" / "results.json").read_text())
  assert doc["protocol"]["dataset"] == "imagenet2012" and doc["protocol"]["num_images"] == 4
  assert "224/0.875" in doc["protocol"]["eval_preprocess"]
  sizes = {(r["height"], r["width"]) for r in doc["rows"]}
  assert sizes == {(56, 56), (224, 224), (128, 112)}
  assert "| mspe |" in proc.stdout


def test_vit_b_flexi_recipe_trains_with_big_vision_underlying_sizes(tmp_path, fake_imagenet,
                                                                     augreg_vit16):
  """configs/vit_b_flexi.py: the /16 initialisation stored as FlexiViT stores it (kernel
  32x32, position embedding 7x7), trained at 240 px with patch sizes 48 and 16, distilled
  from the initialisation at its own patch."""
  work = tmp_path / "flexi"
  proc = runner.run_script("train.py", "configs/vit_b_flexi.py:smoke", work,
                           {"init_file": augreg_vit16, "data.data_dir": fake_imagenet,
                            "progress_bar": False})
  out = runner.summary(proc)
  assert out["step"] == 3 and 1 <= out["programs/bucket"] <= 2 and out["programs/teacher"] == 1
  params = runner.npz(work / "model.npz")
  assert params["embedding/kernel"].shape == (32, 32, 3, 192)
  assert params["pos_embedding"].shape == (1, 49, 192)
  assert {"eval/top1_p48x48", "eval/top1_p16x16"} <= set(out)


@pytest.mark.parametrize("arg, shapes", [("", [9, 25, 81, 25]), ("coarse", [4, 9, 25, 9]),
                                         ("paper", [5, 4, 4, 6])])
def test_vit_b_recipe_shapes(arg, shapes):
  """The authors' per-axis draws (140 shapes: one program each), the coarser grid and the
  paper's square subsets; every shape on the 14x14 grid, each kernel's aspect ratios <= 2:1."""
  from configs import vit_b_mspe
  from mspe_jax import terms
  from mspe_jax.patch_embed import PatchEmbed
  from mspe_jax.vit import ViT
  cfg = vit_b_mspe.get_config(arg or None)
  model = ViT(image_size=224, policy=PatchEmbed("mspe", base_sizes=tuple(cfg.mspe.base_sizes)))
  subsets = terms.subsets_from_config(cfg.mspe, model)
  assert [len(s) for s in subsets] == shapes
  for s in subsets:
    for h, w in s:
      assert h % 14 == 0 and w % 14 == 0 and max(h, w) <= 2 * min(h, w)
  if arg != "paper":
    assert {hw for s in subsets for hw in s} >= {(28, 56), (56, 28), (280, 224), (224, 224)}
  with pytest.raises(ValueError, match="Unknown variant 'bogus'"):
    vit_b_mspe.get_config("bogus")
