"""train@<run>: one training loop for the MLP GAN and DCGAN.

The step is the paper's algorithm (Goodfellow et al. 2014, Algorithm 1): `d_steps` (k)
discriminator updates on fresh real and generated minibatches, then one generator update
(see GANStep).
`loss: minimax` has G minimise log(1 - D(G(z))) as in the paper's equation; the default
`non_saturating` has G maximise log D(G(z)), which the paper recommends in practice.

Everything a run needs to resume lives in `checkpoint.pt`, written atomically after every
epoch. Randomness is seeded per epoch from (seed, epoch), so a run resumed after a kill
draws exactly the batches and noise the uninterrupted run would have.

How the run was trained (device, the precision and memory format `auto` resolved to, versions,
speed) goes to `train.json` after every epoch (pipeline/train_record.py). A resume under other
resolved settings (say a CPU run continued on a GPU: fp32 -> bf16) continues, says so in one
line, and records both stretches; the report marks such a run as mixed.
"""

from __future__ import annotations

import io
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn
from torchvision.utils import save_image
from tqdm import tqdm

from pipeline.atomic import write_bytes_atomic
from pipeline.config import DATASETS_DIR, RUNS_DIR, Params, RunParams
from pipeline.datasets import read_dataset, write_json_atomic
from pipeline.device import cpu_has_fast_bf16, resolve_device
from pipeline.distributed import World, agree, all_sum, close_world, from_main, init_world, use_global_batchnorm
from pipeline.models import EMA_DIR, SNAPSHOTS_DIR, SPEC_FILE, build_models, ema_path, snapshot_path
from pipeline.train_record import RECORD_FILE, TrainRecord

SAMPLE_GRID = 64  # fixed-noise samples per grid, 8 x 8
# Params whose change invalidates a checkpoint. `epochs` and `sample_every` are left out on
# purpose: raising `epochs` continues a finished run exactly where it stopped.
RESUME_IGNORES = {"epochs", "sample_every", "snapshot_every", "device", "compile"}


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


@dataclass
class RunPaths:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def live(self) -> Path:
        return self.root / "dvclive"

    @property
    def snapshots(self) -> Path:
        return self.root / SNAPSHOTS_DIR

    @property
    def ema(self) -> Path:
        return self.root / EMA_DIR


def save_atomic(obj, path: Path) -> None:
    """torch.save through pipeline.atomic, so a kill never leaves a truncated file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def save_grid(images: torch.Tensor, path: Path) -> None:
    buffer = io.BytesIO()
    save_image(images, buffer, format="png", nrow=int(math.sqrt(len(images))), normalize=True, value_range=(-1, 1))
    write_bytes_atomic(path, buffer.getvalue())


def snapshot_due(done: int, epochs: int, every: int | list[int] | None) -> bool:
    """Whether G is snapshotted after epoch `done` (1-based): every `every` epochs or at the
    listed epochs, and always after the last one (the curve ends at the final model); never
    when `every` is None."""
    if every is None:
        return False
    return done == epochs or (done in every if isinstance(every, list) else done % every == 0)


class AveragedGenerator:
    """runs.<run>.ema: an exponential moving average of G's weights, updated after every G step.

    torch's AveragedModel keeps the average (its EMA function, one fused update for all
    parameters); BatchNorm's running statistics are not averaged but recomputed from the
    averaged G's own samples (update_bn on `ema_bn_batches` seeded noise batches): averaged
    weights see other activations than any of the Gs whose statistics an average would mix,
    and eval-mode sampling uses those statistics. The noise is seeded, so the recomputed
    statistics are a function of the averaged weights alone and a resumed run matches an
    uninterrupted one bit for bit."""

    def __init__(self, G: nn.Module, run: RunParams, device: torch.device):
        self.run, self.device = run, device
        self.model = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(run.ema), use_buffers=False)

    def update(self, G: nn.Module) -> None:
        self.model.update_parameters(G)

    def settled(self) -> nn.Module:
        """The averaged G with its BatchNorm statistics recomputed, in eval mode."""
        rng = torch.Generator().manual_seed(epoch_seed(self.run.seed, -1))
        noise = [torch.randn(self.run.batch_size, self.run.nz, generator=rng).to(self.device)
                 for _ in range(self.run.ema_bn_batches)]
        update_bn(noise, self.model.module)
        return self.model.module.eval()


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def to_float(batch: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 B x H x W x C -> float B x C x H x W in [-1, 1], on the batch's device.

    The permuted view already has channels_last strides, which `.float()` keeps."""
    out = batch.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return out if channels_last else out.contiguous()


def d_loss_fn(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    # -[log D(x) + log(1 - D(G(z)))], written with logits for numerical stability.
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def g_loss_fn(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "minimax":
        # minimise log(1 - D(G(z))) = -softplus(logit): saturates when D wins early.
        return -F.softplus(fake_logits).mean()
    # non-saturating: minimise -log D(G(z)).
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def resume_key(run: RunParams, dataset_meta: dict) -> dict:
    key = {k: v for k, v in run.model_dump().items() if k not in RESUME_IGNORES}
    # Every array: a new train/test split of the same images is other data too.
    key["dataset_sha256"] = dataset_meta.get("sha256", {})
    return key


def load_checkpoint(paths: RunPaths, key: dict, epochs: int) -> dict | None:
    """The run's checkpoint if it was made with the same settings and no more than `epochs`
    epochs, else None (start over)."""
    if not paths.checkpoint.is_file():
        return None
    try:
        state = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged checkpoint must not block a fresh start
        print(f"{paths.checkpoint}: unreadable ({exc}); starting over")
        return None
    if state.get("key") != key:
        print(f"{paths.checkpoint}: made with other params or data; starting over")
        return None
    if state["epoch"] > epochs:
        # Only raising `epochs` continues a run; a shorter run is a different run.
        print(f"{paths.checkpoint}: holds epoch {state['epoch']}, more than epochs = {epochs}; starting over")
        return None
    return state


def start_fresh(paths: RunPaths) -> None:
    """Clear what an earlier, different run left (outputs persist between DVC runs)."""
    for child in (paths.samples, paths.live, paths.snapshots, paths.ema):
        shutil.rmtree(child, ignore_errors=True)
    for name in ("checkpoint.pt", "generator.pt", "discriminator.pt", SPEC_FILE, RECORD_FILE):
        (paths.root / name).unlink(missing_ok=True)


def trim_history(live_dir: Path, epochs_done: int) -> None:
    """Drop DVCLive rows of epochs after the checkpoint (logged just before a kill), so a
    resumed run does not log the same epoch twice."""
    for tsv in (live_dir / "plots" / "metrics").glob("*.tsv"):
        header, *rows = tsv.read_text().splitlines(keepends=True)
        kept = [row for row in rows if int(row.split("\t", 1)[0]) < epochs_done]
        if len(kept) != len(rows):
            write_bytes_atomic(tsv, (header + "".join(kept)).encode())


@dataclass(frozen=True)
class Speed:
    """The per-device speed settings a run resolves `auto` to."""
    amp_dtype: torch.dtype | None  # autocast dtype, None = fp32
    channels_last: bool
    fused_adam: bool

    @classmethod
    def resolve(cls, run: RunParams, device: torch.device) -> "Speed":
        cuda, cpu = device.type == "cuda", device.type == "cpu"
        # bf16 autocast where the hardware does bf16 natively: CUDA GPUs that support it, and for
        # the DCGAN CPUs with AMX or AVX512-BF16, where bench/bf16_quality.py found it as good as
        # fp32 over 5 seeds and train_speed 2-2.8x as fast (docs/speed.md). The MLP GAN was worse
        # in bf16 there (FID +23.6, more than one fp32 seed sd), so it stays fp32 on CPUs; and
        # without those instructions bf16 is emulated, many times slower than fp32.
        fast_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu and run.model == "dcgan" and cpu_has_fast_bf16()
        amp = torch.bfloat16 if run.precision == "bf16" or (run.precision == "auto" and fast_bf16) else None
        # channels_last pays on CUDA, and on the CPU only together with bf16 (oneDNN's AMX kernels).
        channels_last = (cuda or (cpu and amp is not None)) if run.channels_last == "auto" else run.channels_last
        # Fused Adam (one kernel for all parameters) is faster on CUDA and on the CPU alike.
        fused = device.type in ("cuda", "cpu") if run.fused_adam == "auto" else run.fused_adam
        return cls(amp, channels_last, fused)

    @property
    def precision(self) -> str:
        return "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"


class GANStep:
    """One iteration of Algorithm 1: `d_steps` D updates, then one G update.

    `real_batches` are float images (the process's slice of each global batch); noise is
    drawn for the whole global batch and sliced the same way, so N processes see exactly
    what one process would. The G update reuses the generated batch of the last D update
    (as pytorch/examples' DCGAN does) instead of drawing fresh noise: a sample from the same
    distribution, one G forward pass cheaper."""

    def __init__(self, G: nn.Module, D: nn.Module, run: RunParams, speed: Speed,
                 device: torch.device, world: World = World()):
        self.G, self.D, self.run, self.speed, self.device, self.world = G, D, run, speed, device, world
        adam = dict(lr=run.lr, betas=(run.beta1, run.beta2), fused=speed.fused_adam or None)
        self.opt_g = torch.optim.Adam(G.parameters(), **adam)
        self.opt_d = torch.optim.Adam(D.parameters(), **adam)
        self.local = run.batch_size // world.size
        self.autocast = dict(device_type=device.type, dtype=speed.amp_dtype or torch.float32,
                             enabled=speed.amp_dtype is not None)

    def noise(self) -> torch.Tensor:
        z = torch.randn(self.run.batch_size, self.run.nz, device=self.device)
        start = self.world.rank * self.local
        return z[start:start + self.local]

    def __call__(self, real_batches: list[torch.Tensor]) -> torch.Tensor:
        """Returns [loss_d, loss_g, mean D(x), mean D(G(z))] as a device tensor (no host sync)."""
        G, D = self.G, self.D
        for j, real in enumerate(real_batches):
            last = j == len(real_batches) - 1
            with torch.autocast(**self.autocast), torch.set_grad_enabled(last):
                fake = G(self.noise())  # with a graph only when the G update will use it
            with torch.autocast(**self.autocast):
                real_logits, fake_logits = D(real), D(fake.detach())
                loss_d = d_loss_fn(real_logits.float(), fake_logits.float())
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        with torch.autocast(**self.autocast):
            loss_g = g_loss_fn(D(fake).float(), self.run.loss)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return torch.stack([loss_d.detach(), loss_g.detach(),
                            torch.sigmoid(real_logits.detach().float()).mean(),
                            torch.sigmoid(fake_logits.detach().float()).mean()])


def prepare_models(run: RunParams, image_size: int, channels: int, device: torch.device,
                   speed: Speed, world: World) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """(G, D) to train (wrapped for DDP / compiled as asked) and the plain (G, D) they wrap."""
    torch.manual_seed(run.seed)  # the initial weights
    G, D = build_models(run.model, image_size=image_size, channels=channels,
                        nz=run.nz, ngf=run.ngf, ndf=run.ndf)
    if world.distributed:
        use_global_batchnorm(G)
        use_global_batchnorm(D)
    memory = torch.channels_last if speed.channels_last else torch.contiguous_format
    G.to(device, memory_format=memory)
    D.to(device, memory_format=memory)
    G_train, D_train = G, D
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G_train, D_train = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if run.compile:
        G_train, D_train = torch.compile(G_train), torch.compile(D_train)
    return G_train, D_train, G, D


def train(run_name: str, params: Params, *, runs_dir: Path = RUNS_DIR, datasets_dir: Path = DATASETS_DIR,
          stop_after_epoch: int | None = None) -> Path:
    """Train one run from params.yaml; returns its folder. Resumes from checkpoint.pt if valid.

    Training reads only `runs.<run>` and the dataset: no evaluator, no evaluate params, so an
    evaluation change never retrains (the fid_domain curve is computed by evaluate from G's
    snapshots). Under torchrun every process trains its slice of each batch; only rank 0
    writes. `stop_after_epoch` ends the work early (as a kill would), for tests of resuming.
    """
    run = params.run(run_name)
    world, device = init_world(resolve_device(run.device))
    try:
        out = _train(run_name, run, Path(runs_dir), Path(datasets_dir), device, world, stop_after_epoch)
    except BaseException:
        close_world(world, failed=True)
        raise
    close_world(world)
    return out


def _train(run_name: str, run: RunParams, runs_dir: Path, datasets_dir: Path, device: torch.device,
           world: World, stop_after_epoch: int | None) -> Path:
    from dvclive import Live  # imported here: it is slow to import and only training needs it

    if device.type == "cuda" and run.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    paths = RunPaths(runs_dir / run_name)
    dataset = read_dataset(datasets_dir / run.dataset)
    train_idx = dataset.indices("train")
    if run.max_images is not None:
        train_idx = train_idx[: run.max_images]
    if len(train_idx) < run.batch_size * run.d_steps:
        raise ValueError(f"params.yaml: runs.{run_name}.batch_size: {run.batch_size} x d_steps "
                         f"{run.d_steps} exceeds the {len(train_idx)} training images of {run.dataset}")
    if run.batch_size % world.size:
        raise ValueError(f"params.yaml: runs.{run_name}.batch_size: {run.batch_size} is not divisible "
                         f"by the {world.size} processes")
    # The whole uint8 training split moves to the device once (CelebA 64x64: 2.5 GB); batches
    # are index gathers there, converted to float on the device: no DataLoader, no per-batch copy.
    data = torch.from_numpy(dataset.images[train_idx]).to(device)
    n_images = len(data)

    speed = Speed.resolve(run, device)
    G_train, D_train, G, D = prepare_models(run, dataset.image_size, dataset.channels, device, speed, world)
    step = GANStep(G_train, D_train, run, speed, device, world)
    ema = AveragedGenerator(G, run, device) if run.ema is not None else None

    key = resume_key(run, dataset.meta)
    # Several nodes: every process must train on the same data with the same params, and
    # resume from the same epoch, whatever its own disk holds; rank 0's decides.
    if not agree(from_main(key, world) == key, world, device):
        raise ValueError(f"{datasets_dir / run.dataset} or params.yaml runs.{run_name} differs between the "
                         "processes of this torchrun: every node needs the same commit and the same dataset "
                         "(dvc pull)")
    state = from_main(load_checkpoint(paths, key, run.epochs) if world.is_main else None, world)
    if state is None:
        if world.is_main:
            paths.root.mkdir(parents=True, exist_ok=True)
            start_fresh(paths)
        start_epoch = 0
    else:
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        step.opt_g.load_state_dict(state["opt_g"])
        step.opt_d.load_state_dict(state["opt_d"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        start_epoch = state["epoch"]
        if world.is_main:
            print(f"{run_name}: resuming after epoch {start_epoch} of {run.epochs}")
    # Rank 0 keeps the record; a checkpoint from before records existed starts one marked so.
    record = TrainRecord.resume(run_name, state and state.get("record"), start_epoch)
    change = record.start_stretch(start_epoch, device, speed, run, world)
    if change and world.is_main:
        print(f"{run_name}: resuming under other settings: {change}; continuing, and {RECORD_FILE} "
              "records both (docs/speed.md, 'Resuming elsewhere')")

    live = None
    if world.is_main:
        paths.samples.mkdir(parents=True, exist_ok=True)
        paths.snapshots.mkdir(parents=True, exist_ok=True)  # a DVC output even when empty
        paths.ema.mkdir(parents=True, exist_ok=True)  # likewise
        spec = {"model": run.model, "dataset": run.dataset, "image_size": dataset.image_size,
                "channels": dataset.channels, "nz": run.nz, "ngf": run.ngf, "ndf": run.ndf,
                "batch_size": run.batch_size,  # evaluate's sample_mode train draws G in these batches
                "seed": run.seed,  # evaluate rebuilds D's initialisation from it (the random-D control)
                "ema": run.ema, "ema_bn_batches": run.ema_bn_batches if run.ema is not None else None}
        write_json_atomic(paths.root / SPEC_FILE, spec)
        if start_epoch:
            trim_history(paths.live, start_epoch)
        live = Live(dir=str(paths.live), resume=start_epoch > 0, save_dvc_exp=False, dvcyaml=False)
        live.step = start_epoch  # one DVCLive step per epoch; the checkpoint, not DVCLive, says where we are

    fixed_noise = torch.randn(SAMPLE_GRID, run.nz, generator=torch.Generator().manual_seed(run.seed)).to(device)
    batches = n_images // (run.batch_size * run.d_steps)  # G updates per epoch; each uses k real batches
    local = step.local
    progress = tqdm(total=run.epochs * batches, initial=start_epoch * batches, desc=run_name,
                    unit="step", dynamic_ncols=True, disable=not world.is_main)
    try:
        for epoch in range(start_epoch, run.epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                return paths.root
            started = time.perf_counter()
            torch.manual_seed(epoch_seed(run.seed, epoch))  # noise and dropout (all devices)
            perm = torch.randperm(n_images, generator=torch.Generator().manual_seed(epoch_seed(run.seed, epoch)))
            perm = perm.to(device)
            G_train.train()
            D_train.train()
            sums = torch.zeros(4, device=device)  # stays on the device: no host sync inside the epoch
            for i in range(batches):
                reals = []
                for j in range(run.d_steps):
                    start = (i * run.d_steps + j) * run.batch_size + world.rank * local
                    reals.append(to_float(data[perm[start:start + local]], speed.channels_last))
                sums += step(reals)
                if ema is not None:
                    ema.update(G)
                progress.update()

            means = (all_sum(sums, world) / (batches * world.size)).tolist()
            if not all(math.isfinite(v) for v in means):
                raise TrainingDiverged(
                    f"{run_name}: loss became NaN/Inf in epoch {epoch + 1} (loss_d={means[0]}, loss_g={means[1]}); "
                    f"{paths.checkpoint} still holds epoch {epoch}. Lower runs.{run_name}.lr or change the seed.")
            done = epoch + 1
            snapshot = snapshot_due(done, run.epochs, run.snapshot_every)
            grid = done % run.sample_every == 0 or done == run.epochs
            # The G that snapshots and grids show is the averaged one when there is one, settled
            # only when one of them is due; every process settles it (its BatchNorm may be global
            # under DDP), and the due epochs are the same on every process.
            scored = ema.settled() if ema is not None and (snapshot or grid) else G
            if world.is_main:
                seconds = time.perf_counter() - started
                for name, value in zip(("loss_d", "loss_g", "d_real", "d_fake"), means):
                    live.log_metric(name, value)
                live.log_metric("images_per_s", n_images / seconds)
                record.add_epoch(done, seconds, n_images / seconds)
                progress.set_postfix(epoch=done, loss_d=f"{means[0]:.3f}", loss_g=f"{means[1]:.3f}")
                if snapshot:
                    save_atomic(scored.state_dict(), snapshot_path(paths.root, done))
                if grid:
                    scored.eval()  # the grids show the G that evaluate scores
                    with torch.no_grad():
                        save_grid(scored(fixed_noise).float().cpu(), paths.samples / f"epoch_{done:04d}.png")
                save_atomic({"key": key, "epoch": done, "generator": G.state_dict(),
                             "discriminator": D.state_dict(), "opt_g": step.opt_g.state_dict(),
                             "opt_d": step.opt_d.state_dict(), "record": record.data,
                             **({"ema": ema.model.state_dict()} if ema is not None else {})}, paths.checkpoint)
                # After the checkpoint: a kill between the two leaves a record one epoch behind,
                # which the resumed run rewrites from the checkpoint's copy.
                record.write(paths.root)
                live.next_step()
    finally:
        progress.close()
        if live is not None:
            live.end()

    if world.is_main:
        # Final exports: state dicts loadable with weights_only=True, the last grid and snapshot.
        # Both are drawn here when missing: a run killed after epoch 3 of 5 and then given
        # `epochs: 3` resumes with nothing left to train, and epoch 3 may have had no grid
        # (sample_every) or snapshot (snapshot_every).
        save_atomic(G.state_dict(), paths.root / "generator.pt")
        save_atomic(D.state_dict(), paths.root / "discriminator.pt")
        scored = ema.settled() if ema is not None else G
        if ema is not None:
            save_atomic(scored.state_dict(), ema_path(paths.root))
        record.write(paths.root)
        last = paths.samples / f"epoch_{run.epochs:04d}.png"
        if not last.is_file():
            scored.eval()
            with torch.no_grad():
                save_grid(scored(fixed_noise).float().cpu(), last)
        write_bytes_atomic(paths.samples / "final.png", last.read_bytes())
        if run.snapshot_every is not None and not snapshot_path(paths.root, run.epochs).is_file():
            save_atomic(scored.state_dict(), snapshot_path(paths.root, run.epochs))
    return paths.root
