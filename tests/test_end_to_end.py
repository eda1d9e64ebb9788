"""The real `dvc repro` of the whole DAG (smoke profile), offline, in a temporary copy of the repo."""

import json
import math
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from pipeline.evaluate.inception_weights import WHEEL_FILE_SHA256
from pipeline.config import load_params
from pipeline.results_archive import archive_runs, restore
from pipeline.smoke import REPO, smoke_repo
from tests.dag_audit import audit_env, params_problems, undeclared_access


@pytest.mark.slow
@pytest.mark.timeout(2700)  # about 9 min on 2 idle cores; pyproject's 900 s cut it at 3 processes on 2 cores
def test_dvc_repro_smoke_profile_end_to_end(tmp_path, mnist_source):
    def dvc(*args):
        return subprocess.run(["dvc", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    # Every stage runs with its file access recorded (tests/dag_audit.py): it must read only
    # what dvc.yaml declares as its deps and write only its outs.
    audit_log = tmp_path / "audit"
    with smoke_repo(tmp_path, extra_env=lambda copy: audit_env(audit_log, copy)) as (repo, env):
        dvc("repro")
    recorded = {path.read_text().splitlines()[0] for path in audit_log.glob("*.log")}
    assert {"STAGE crawl_anime", "STAGE domain_evaluator@mnist", "STAGE report"} <= recorded  # the recorder works
    problems = undeclared_access(repo, audit_log)
    assert not problems, "stages touch files dvc.yaml does not declare:\n" + "\n".join(problems)
    # Every params key a stage's code read is tracked by its params in dvc.yaml, and no speed-only key is.
    assert any(line.startswith("P EvaluateParams.") for path in audit_log.glob("*.log")
               for line in path.read_text().splitlines())  # the params recorder works
    problems = params_problems(repo, audit_log)
    assert not problems, "params read but not tracked, or tracked for nothing:\n" + "\n".join(problems)
    for run in ("gan-mnist", "dcgan-mnist", "dcgan-celeba", "dcgan-anime"):
        run_dir = repo / "runs" / run
        for name in ("generator.pt", "discriminator.pt", "checkpoint.pt", "model.json", "samples/final.png"):
            assert (run_dir / name).is_file(), name
        final = json.loads((run_dir / "dvclive" / "metrics.json").read_text())
        assert all(math.isfinite(final[k]) for k in ("loss_d", "loss_g", "d_real", "d_fake"))
        tile = 28 if run.endswith("mnist") else 64
        assert Image.open(run_dir / "samples" / "final.png").size == (8 * (tile + 2) + 2,) * 2

    # Evaluation: flat metric names for every run, the MNIST ones with the domain metrics.
    for run in ("gan-mnist", "dcgan-mnist", "dcgan-celeba", "dcgan-anime"):
        metrics = json.loads((repo / "runs" / run / "metrics.json").read_text())
        for key in ("probe_acc", "probe_acc_random_d", "probe_acc_pixels"):
            assert 0 <= metrics[key] <= 1, (run, key)
        # The standard Inception at smoke counts (200 samples): KID, precision and recall, and no
        # FID (a 2048-d covariance from 200 images), with the reason in the protocol.
        protocol = json.loads((repo / "runs" / run / "eval" / "protocol.json").read_text())
        assert metrics["fid"] is None and math.isfinite(metrics["kid"]), run
        # The anime set is a handful of crawled faces: k-NN balls may not fit, said in the protocol.
        assert (metrics["precision"] is not None and 0 <= metrics["precision"] <= 1) or \
            "k = 3" in protocol["spaces"]["inception"]["precision_recall"], run
        assert "2048-d Inception" in protocol["notes"]["fid"]
        assert protocol["spaces"]["inception"]["weights"]["source_sha256"] == WHEEL_FILE_SHA256
    for run in ("gan-mnist", "dcgan-mnist"):
        metrics = json.loads((repo / "runs" / run / "metrics.json").read_text())
        assert metrics["fid_domain"] > metrics["fid_domain_floor"] > 0 and metrics["fid_domain_std"] > 0
        assert 1 <= metrics["mode_coverage"] <= 10
        assert metrics["probe_acc_pixels"] > 0.5  # raw pixels, 10 labelled images per digit
        curve = (repo / "runs" / run / "curve.tsv").read_text().splitlines()
        assert curve[0].startswith("epoch\tfid\tfid_std\tfid_domain") and len(curve) == 2  # 1 epoch, snapshot_every 1
    for run in ("dcgan-celeba", "dcgan-anime"):
        metrics = json.loads((repo / "runs" / run / "metrics.json").read_text())
        assert metrics["fid_domain"] is None and metrics["kid_domain"] is None
    page = (repo / "reports" / "index.md").read_text()
    assert all(run in page for run in ("gan-mnist", "dcgan-mnist", "dcgan-celeba", "dcgan-anime"))
    assert (repo / "reports" / "samples" / "dcgan-anime.png").is_file()

    # DVC sees the metrics of every run, so `dvc exp show` / `dvc metrics diff` can compare them.
    shown = json.loads(dvc("metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert {"runs/gan-mnist/dvclive/metrics.json", "runs/dcgan-mnist/metrics.json",
            "runs/dcgan-anime/metrics.json"} <= set(files)
    exp = dvc("exp", "show", "--no-pager", "--csv")
    assert "runs/dcgan-mnist/dvclive/metrics.json:loss_g" in exp
    assert "runs/dcgan-mnist/metrics.json:fid_domain" in exp

    # Comparing in the terminal (docs/comparing.md): the workspace, a commit.
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)  # noqa: E731
    git("add", "-A")
    git("commit", "-q", "-m", "smoke results")
    python = lambda *args: subprocess.run([sys.executable, *args], cwd=repo, env=env, check=True,  # noqa: E731
                                          capture_output=True, text=True).stdout
    workspace = python("-m", "pipeline", "compare")
    committed = python("-m", "pipeline", "compare", "HEAD")
    row = next(line for line in committed.splitlines() if line.startswith("| dcgan-mnist@HEAD"))
    # How the run was trained travels with the commit (train.json, cache: false) and shows per run.
    record = json.loads((repo / "runs" / "dcgan-mnist" / "train.json").read_text())
    assert record["stretches"][0]["device"]["kind"] == "cpu" and record["epochs"]
    assert f"| cpu {record['precision']} |" in row
    metrics = json.loads((repo / "runs" / "dcgan-mnist" / "metrics.json").read_text())
    assert f"{metrics['fid_domain']:.2f} ± {metrics['fid_domain_std']:.2f}" in row
    assert f"{metrics['fid_domain']:.2f} ± {metrics['fid_domain_std']:.2f}" in workspace
    shown = dvc("exp", "show", "--no-pager", "--csv", "--drop", ".*", "--keep",  # README's filter
                r"Experiment|rev|runs/.*/metrics\.json:(fid|fid_std|fid_domain|fid_domain_std|mode_coverage|probe_acc|"
                r"probe_acc_ci95|probe_acc_random_d)$")
    header = shown.splitlines()[0].split(",")
    assert "runs/dcgan-mnist/metrics.json:fid_domain" in header and "runs/dcgan-mnist/metrics.json:fid_domain_std" in header
    assert not [c for c in header if "dvclive" in c or c.startswith("runs.") or c.endswith("probe_acc_n10")], header

    # Nothing changed: a second repro runs no stage.
    again = dvc("repro")
    assert "Running stage" not in again
    assert "up to date" in dvc("status")

    # The runs archived beside a Results page (pipeline/results_archive.py) carry the whole experiment
    # upstream of them, and a fresh copy of the same checkout restores them without running a stage.
    names = list(load_params(repo / "params.yaml").runs)
    archive = tmp_path / "archive"
    assert archive_runs(repo, names, archive, source_root=REPO) == names
    stages = json.loads((archive / "dcgan-mnist" / "provenance.json").read_text())["stages"]
    assert set(stages) == {"ingest_mnist", "domain_evaluator@mnist", "fid_reference@mnist", "train@dcgan-mnist",
                           "evaluate@dcgan-mnist"}, set(stages)
    assert "pipeline/train.py" in stages["train@dcgan-mnist"]["sources"]
    assert "runs.dcgan-mnist" in stages["train@dcgan-mnist"]["params"]
    mnist_runs = [name for name, run in load_params(repo / "params.yaml").runs.items() if run.dataset == "mnist"]
    with smoke_repo(tmp_path / "second") as (second, second_env):
        restored, stale = restore(archive, second, names, source_root=REPO)
        subprocess.run([sys.executable, "-m", "pipeline", "report"], cwd=second, env=second_env, check=True,
                       capture_output=True)
    assert restored == mnist_runs
    # The second copy's CelebA fixture lies elsewhere (celeba.source): a different data source.
    assert "ingest_celeba: param celeba" in stale.get("dcgan-celeba", ""), stale
    # Each run's own rows: the metrics, timing and probe-control tables (the probe table's columns depend on which
    # other datasets' runs are on the page).
    rows = lambda page: [line for line in page.read_text().splitlines()  # noqa: E731
                         if line.startswith(tuple(f"| {name} |" for name in mnist_runs))
                         and (" | cpu " in line or "paired bootstrap" in line)]
    first_rows = rows(repo / "reports" / "index.md")
    assert first_rows and rows(second / "reports" / "index.md") == first_rows

    # Evaluation-only changes (sample counts, seed, probe, a new classifier) never retrain.
    original = (repo / "params.yaml").read_text()

    def stale_stages() -> set[str]:
        # `dvc status` names each stale stage on an unindented line ending in ":".
        return {line[:-1] for line in dvc("status").splitlines() if line.endswith(":") and not line[0].isspace()}

    def stale_after(section: str, key: str, value) -> set[str]:
        changed = yaml.safe_load(original)
        node = changed
        for part in section.split("."):
            node = node[part]
        assert key in node, (section, key)
        node[key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        return stale_stages()

    for key, value in (("num_real", 900), ("probe_c_grid", [0.1]), ("seed", 3)):
        stale = stale_after("evaluate", key, value)
        assert "evaluate@dcgan-mnist" in stale and not [s for s in stale if s.startswith("train@")], (key, stale)
    stale = stale_after("evaluate", "classifier_epochs", 2)  # evaluate follows through the classifier, a dep
    assert "domain_evaluator@mnist" in stale and not [s for s in stale if s.startswith("train@")], stale
    # Speed-only keys (config.py's SPEED_ONLY mark) stale nothing: the same numbers, faster or slower.
    for section, key, value in (("evaluate", "batch_size", 7), ("evaluate", "inception_compile", False),
                                ("celeba", "workers", 1), ("anime.faces", "workers", 1),
                                ("anime.crawl", "download_delay", 0.5)):
        assert stale_after(section, key, value) == set(), (section, key)
    # ... while a key beside them that changes a result stales exactly its stages.
    assert stale_after("evaluate", "inception_precision", "bf16-compiled") == {  # the smoke profile runs bf16
        f"{stage}@{name}" for stage, names in (("fid_reference", ("mnist", "celeba", "anime")),
                                               ("evaluate", ("gan-mnist", "dcgan-mnist", "dcgan-celeba", "dcgan-anime")))
        for name in names}
    assert stale_after("anime.faces", "margin", 0.5) == {"crop_anime_faces"}
    assert stale_after("celeba", "mtcnn_device", "cpu") == {"ingest_celeba"}
    (repo / "params.yaml").write_text(original)
    assert "up to date" in dvc("status")

    # Speed-only keys change no number either: an evaluation re-run with other speed-only values matches the
    # first to arithmetic noise (so no such key reaches a result, as batch_size once reached the
    # probe's BatchNorm recalibration).
    before = json.loads((repo / "runs" / "dcgan-mnist" / "metrics.json").read_text())
    changed = yaml.safe_load(original)
    changed["evaluate"].update(batch_size=37, inception_compile=False)
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    dvc("repro", "--force", "--single-item", "evaluate@dcgan-mnist")
    after = json.loads((repo / "runs" / "dcgan-mnist" / "metrics.json").read_text())
    assert set(after) == set(before)
    differ = {key: (before[key], after[key]) for key in before if isinstance(before[key], (int, float))
              and before[key] != pytest.approx(after[key], rel=1e-3, abs=1e-3)}
    assert not differ, differ
    (repo / "params.yaml").write_text(original)
    dvc("repro")  # the report, if the re-run's last digits moved
    assert "up to date" in dvc("status")

    # A params change re-runs only the affected run: its training is all that is stale, and once
    # that has re-run, its evaluation is (the evaluation itself is the re-run above, not repeated).
    params = (repo / "params.yaml").read_text().replace("ngf: 32", "ngf: 16", 1)
    (repo / "params.yaml").write_text(params)
    assert stale_stages() == {"train@dcgan-mnist", "report"}  # the report tracks every run's params
    out = dvc("repro", "train@dcgan-mnist")
    assert "Running stage 'train@dcgan-mnist'" in out
    assert "starting over" in out  # the persisted checkpoint of the old params is not resumed
    assert stale_stages() == {"evaluate@dcgan-mnist", "report"}

    # A new MNIST (mnist.* params): once it is ingested, DVC sees that the classifier, the
    # reference and every MNIST run were made from the old one, and no face stage.
    changed = yaml.safe_load((repo / "params.yaml").read_text())
    changed["mnist"]["limit_test"] -= 1
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    assert "ingest_mnist" in dvc("status")
    dvc("repro", "ingest_mnist")
    stale = {line.rstrip(":") for line in dvc("status").splitlines() if line and not line[0].isspace()}
    assert {"domain_evaluator@mnist", "fid_reference@mnist", "evaluate@gan-mnist", "evaluate@dcgan-mnist",
            "train@gan-mnist", "train@dcgan-mnist"} <= stale, stale
    assert not [stage for stage in stale if "celeba" in stage or "anime" in stage], stale
