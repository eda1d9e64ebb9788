"""GANStep is Algorithm 1 of Goodfellow et al. (2014): what each update may touch, what it reads.

Real DCGAN models (BatchNorm included) on CPU in fp32; the step is observed through public
seams only: the optimisers' step hooks and a module that records what D is shown.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.config import RunParams
from pipeline.models import build_models
from pipeline.train import GANStep, Speed, d_loss_fn, g_loss_fn

FP32 = Speed(amp_dtype=None, channels_last=False, fused_adam=False)
BATCH = 8


class Recording(nn.Module):
    """D as it is, plus a log of every forward pass: (input, output logits)."""

    def __init__(self, inner: nn.Module, events: list):
        super().__init__()
        self.inner, self.events = inner, events

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.events.append(("D", x, out))
        return out


def params_of(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def make_step(d_steps: int = 1, loss: str = "non_saturating"):
    torch.manual_seed(0)
    G, D = build_models("dcgan", image_size=28, channels=1, nz=8, ngf=8, ndf=8)
    events: list = []
    run = RunParams(model="dcgan", dataset="mnist", batch_size=BATCH, nz=8, ngf=8, ndf=8, d_steps=d_steps,
                    loss=loss, lr=1e-2, device="cpu")
    step = GANStep(G, Recording(D, events), run, FP32, torch.device("cpu"))
    return step, G, D, events


def real_batches(k: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(BATCH, 1, 28, 28, generator=gen) * 2 - 1 for _ in range(k)]


def watch(step: GANStep, G: nn.Module, D: nn.Module, events: list) -> None:
    """Log each optimiser step with both nets' weights just before and after it, and whether
    G held any gradient when D's update ran."""
    def pre(name):
        def hook(opt, args, kwargs):
            events.append((f"{name}_pre", params_of(G), params_of(D),
                           [p.grad is not None for p in G.parameters()]))
        return hook

    def post(name):
        def hook(opt, args, kwargs):
            events.append((f"{name}_post", params_of(G), params_of(D)))
        return hook

    for name, opt in (("opt_d", step.opt_d), ("opt_g", step.opt_g)):
        opt.register_step_pre_hook(pre(name))
        opt.register_step_post_hook(post(name))


def of_kind(events: list, kind: str) -> list:
    return [e for e in events if e[0] == kind]


@pytest.mark.parametrize("k", [1, 3])
def test_d_updates_leave_g_alone_and_the_g_update_leaves_d_alone(k):
    step, G, D, events = make_step(d_steps=k)
    watch(step, G, D, events)
    # Two iterations: the second starts with G's gradients of the first G update still
    # attached, which a D optimiser that also held G's parameters would apply.
    for _ in range(2):
        del events[:]
        g0 = params_of(G)
        step(real_batches(k))
        d_pre, d_post = of_kind(events, "opt_d_pre"), of_kind(events, "opt_d_post")
        (g_pre,), (g_post,) = of_kind(events, "opt_g_pre"), of_kind(events, "opt_g_post")
        assert len(d_pre) == len(d_post) == k  # k D updates per G update
        # The order is Algorithm 1's: all k D updates, then the G update.
        assert [e[0] for e in events if e[0].endswith("_pre")] == ["opt_d_pre"] * k + ["opt_g_pre"]
        for before, after in zip(d_pre, d_post):
            assert same(before[1], g0) and same(after[1], g0), "a D update changed G's weights"
            assert not same(before[2], after[2]), "a D update did not change D"
        assert same(g_pre[2], d_post[-1][2]) and same(g_post[2], d_post[-1][2]), "the G update changed D's weights"
        assert not same(g_pre[1], g_post[1]), "the G update did not change G"
        assert same(params_of(D), d_post[-1][2]) and same(params_of(G), g_post[1])


def d_update_inputs(events: list) -> list[list[torch.Tensor]]:
    """What D was shown before each D update (the G update's pass comes after the last one)."""
    seen, groups = [], []
    for event in events:
        if event[0] == "D":
            seen.append(event[1])
        elif event[0] == "opt_d_pre":
            groups.append(seen)
            seen = []
    return groups


def test_the_fake_shown_to_d_is_detached():
    step, G, D, events = make_step(d_steps=2)
    watch(step, G, D, events)
    reals = real_batches(2)
    step(reals)
    for group in d_update_inputs(events):
        (fake,) = [x for x in group if not any(x is r for r in reals)]
        assert fake.grad_fn is None and not fake.requires_grad, "D's fake carries G's graph"
    # G starts without gradients; D's loss must not put any there. (Without the detach the
    # D update either leaves gradients in G or frees G's graph before the G update needs it.)
    for event in of_kind(events, "opt_d_pre"):
        assert not any(event[3]), "G holds a gradient during a D update: the fake was not detached"
    # The G update does reach G through D: its D pass has a graph back to G.
    assert of_kind(events, "D")[-1][1].grad_fn is not None


@pytest.mark.parametrize("k", [1, 2, 4])
def test_k_d_updates_read_k_distinct_real_batches(k):
    step, G, D, events = make_step(d_steps=k)
    watch(step, G, D, events)
    reals = real_batches(k)
    step(reals)
    groups = d_update_inputs(events)
    assert len(groups) == k
    for j, group in enumerate(groups):
        shown = [r for r in range(k) if any(x.shape == reals[r].shape and torch.equal(x, reals[r]) for x in group)]
        assert shown == [j], f"D update {j} read real batches {shown}, expected only batch {j}"
        fakes = [x for x in group if not any(torch.equal(x, r) for r in reals)]
        assert len(fakes) == 1 and fakes[0].shape == reals[j].shape
    # Each D update sees a freshly generated batch, not the same fake k times.
    fakes = [next(x for x in g if not any(torch.equal(x, r) for r in reals)) for g in groups]
    assert all(not torch.equal(a, b) for i, a in enumerate(fakes) for b in fakes[i + 1:])


# --- the losses against their closed forms, computed in float64 with math, not torch's BCE

LOGITS_REAL = [-4.0, -0.5, 0.0, 0.3, 2.5, 7.0]
LOGITS_FAKE = [-6.0, -1.2, 0.0, 0.8, 1.5, 3.0]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def closed_d(real, fake) -> float:
    # -(E[log D(x)] + E[log(1 - D(G(z)))])
    return -mean(math.log(sigmoid(r)) for r in real) - mean(math.log(1 - sigmoid(f)) for f in fake)


def closed_g(fake, kind: str) -> float:
    if kind == "minimax":
        return mean(math.log(1 - sigmoid(f)) for f in fake)  # G minimises E[log(1 - D(G(z)))]
    return -mean(math.log(sigmoid(f)) for f in fake)  # G minimises -E[log D(G(z))]


def test_d_loss_is_its_closed_form():
    value = d_loss_fn(torch.tensor(LOGITS_REAL), torch.tensor(LOGITS_FAKE))
    assert value.item() == pytest.approx(closed_d(LOGITS_REAL, LOGITS_FAKE), rel=1e-6)
    # D is rewarded for calling real real and fake fake, not the reverse.
    assert d_loss_fn(torch.tensor([5.0]), torch.tensor([-5.0])) < d_loss_fn(torch.tensor([-5.0]), torch.tensor([5.0]))


@pytest.mark.parametrize("kind", ["non_saturating", "minimax"])
def test_g_loss_is_its_closed_form(kind):
    value = g_loss_fn(torch.tensor(LOGITS_FAKE), kind)
    assert value.item() == pytest.approx(closed_g(LOGITS_FAKE, kind), rel=1e-6)
    # Both fall as D is fooled more (larger D(G(z))).
    assert g_loss_fn(torch.tensor([2.0]), kind) < g_loss_fn(torch.tensor([-2.0]), kind)


def test_the_two_g_losses_differ_where_the_paper_says():
    # Early in training D rejects fakes (very negative logits): the minimax loss saturates
    # (tiny gradient) while the non-saturating one keeps a strong gradient.
    x = torch.tensor([-8.0], requires_grad=True)
    (grad_minimax,) = torch.autograd.grad(g_loss_fn(x, "minimax"), x)
    (grad_ns,) = torch.autograd.grad(g_loss_fn(x, "non_saturating"), x)
    assert abs(grad_minimax.item()) < 1e-3 < 0.9 < abs(grad_ns.item())


@pytest.mark.parametrize("kind", ["non_saturating", "minimax"])
def test_the_step_reports_the_closed_form_losses_of_the_logits_it_used(kind):
    step, G, D, events = make_step(d_steps=2, loss=kind)
    reals = real_batches(2)
    loss_d, loss_g, d_real, d_fake = step(reals).tolist()
    passes = of_kind(events, "D")
    # The last D update: D(real batch 2), D(detached fake); then the G update's D(fake).
    (_, x_real, real_logits), (_, _, fake_logits), (_, _, g_logits) = passes[-3:]
    assert torch.equal(x_real, reals[-1])
    real_logits, fake_logits, g_logits = (t.detach().double().tolist() for t in (real_logits, fake_logits, g_logits))
    assert loss_d == pytest.approx(closed_d(real_logits, fake_logits), rel=1e-5)
    assert loss_g == pytest.approx(closed_g(g_logits, kind), rel=1e-5)
    assert d_real == pytest.approx(mean(map(sigmoid, real_logits)), rel=1e-5)
    assert d_fake == pytest.approx(mean(map(sigmoid, fake_logits)), rel=1e-5)
