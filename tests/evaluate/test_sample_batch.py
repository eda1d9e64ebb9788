"""evaluate.batch_size is speed only: G in eval mode gives the same images at any batch size,
and sample_mode train draws G in the run's own training batches (model.json), never in
evaluate.batch_size, since there the batch's statistics are part of the images."""

import pytest
import torch

from pipeline.config import EvaluateParams
from pipeline.evaluate.images import generate_uint8, sample_batch_size
from pipeline.models import build_models


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    g, _ = build_models("dcgan", image_size=28, channels=1, nz=8, ngf=8)
    with torch.no_grad():  # running statistics far from a batch's, so the mode shows
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.5)
                m.running_var.fill_(4.0)
    return g


def draw(generator, p: EvaluateParams, spec: dict) -> torch.Tensor:
    return generate_uint8(generator, 40, 8, p.seed, sample_batch_size(p, spec), "cpu", p.sample_mode)


def test_eval_mode_images_do_not_depend_on_evaluate_batch_size(generator):
    spec = {"batch_size": 16}
    small, large = (draw(generator, EvaluateParams(batch_size=b), spec) for b in (7, 250))
    assert torch.equal(small, large)


def test_train_mode_draws_in_the_runs_training_batches(generator):
    spec = {"batch_size": 16}
    got = [draw(generator, EvaluateParams(sample_mode="train", batch_size=b), spec) for b in (7, 250)]
    assert torch.equal(got[0], got[1])  # evaluate.batch_size changes nothing here either
    assert torch.equal(got[0], generate_uint8(generator, 40, 8, 0, 16, "cpu", "train"))
    assert not torch.equal(got[0], generate_uint8(generator, 40, 8, 0, 7, "cpu", "train"))  # the batch matters
    with pytest.raises(ValueError, match="retrain"):
        draw(generator, EvaluateParams(sample_mode="train"), {})  # a model.json from before the record
