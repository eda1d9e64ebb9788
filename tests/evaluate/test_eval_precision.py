"""Evaluation arithmetic never follows training's: a bf16 + channels_last run is scored in fp32."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook

from pipeline.config import Params
from pipeline.evaluate.reference import compute_reference
from pipeline.evaluate.run import evaluate_run
from pipeline.train import train
from tests.evaluate.eval_helpers import make_params


class ForwardSpy:
    """Every module forward in the process: was autocast on, and which float dtypes came out."""

    def __init__(self):
        self.autocast, self.dtypes = [], set()

    def __call__(self, module, inputs, output):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        for out in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                self.dtypes.add(out.dtype)

    def __enter__(self):
        self.handle = register_module_forward_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_the_spy_sees_autocast_where_it_is_on():
    """The control: without it the test below could pass for a spy that never fires."""
    with ForwardSpy() as spy, torch.autocast("cpu", dtype=torch.bfloat16):
        torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert spy.autocast == [True] and spy.dtypes == {torch.bfloat16}


@pytest.mark.parametrize("model, inception", [("gan", False), ("dcgan", False), ("dcgan", True)])
def test_a_bf16_trained_run_is_evaluated_in_fp32(tmp_path, mnist_dir, classifier, inception_weights, model, inception):
    run = {"model": model, "dataset": "mnist", "epochs": 1, "batch_size": 64, "max_images": 512, "ngf": 8,
           "ndf": 8, "nz": 16, "device": "cpu", "precision": "bf16", "channels_last": True}
    run_dir = train("bf16-run", Params.model_validate({"runs": {"bf16-run": run}}), runs_dir=tmp_path / "runs",
                    datasets_dir=mnist_dir.parent)
    # With the standard Inception too (a few images: KID, no FID), at its default precision, fp32.
    params = make_params(inception=True, inception_weights=str(inception_weights), num_real=8, num_samples=8,
                         probe_per_class=[10], kid_subset_size=8) if inception else make_params()
    reference = tmp_path / "reference"
    compute_reference("mnist", mnist_dir, reference, params, classifier_path=classifier[0])
    with ForwardSpy() as spy:
        metrics = evaluate_run("bf16-run", run_dir, mnist_dir, reference, params, classifier_path=classifier[0])
    assert metrics["kid_domain"] is not None and metrics["probe_acc"] > 0
    assert (metrics["kid"] is not None) == inception
    # G's samples, the classifier's features and D's probe features: all fp32, never under autocast.
    assert len(spy.autocast) > 100 and not any(spy.autocast)
    assert spy.dtypes == {torch.float32}
