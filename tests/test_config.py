import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import speed_only
from tests.dag_audit import _covers, params_fields

from pipeline.config import Params, ParamsError, load_params

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def base() -> dict:
    return {"runs": {"gan-mnist": {"model": "gan", "dataset": "mnist", "epochs": 3}}}


def test_repository_params_load_with_the_seed_runs():
    params = load_params(REPO / "params.yaml")
    for name, model in (("gan-mnist", "gan"), ("dcgan-mnist", "dcgan")):
        run = params.run(name)
        assert (run.model, run.dataset, run.epochs, run.batch_size) == (model, "mnist", 200, 128)
        assert (run.lr, run.beta1) == (2e-4, 0.5)


def test_smoke_params_load():
    from pipeline.smoke import smoke_params

    data = smoke_params(REPO / "params.smoke.yaml", base_url="http://127.0.0.1:8000", celeba_source="/data/celeba")
    params = Params.model_validate(data)
    assert [source.base_url for source in params.anime.crawl.sources] == ["http://127.0.0.1:8000"]
    assert params.celeba.source == "/data/celeba"
    assert Path(params.mnist.source).is_absolute()
    assert set(params.runs) >= {"gan-mnist", "dcgan-mnist"}
    assert all(run.epochs <= 2 for run in params.runs.values())
    # "machine" is filled in with the arithmetic this CPU runs fast (emulated bf16 is ~6x slower).
    from pipeline.device import cpu_has_fast_bf16
    assert params.evaluate.inception_precision == ("bf16" if cpu_has_fast_bf16() else "fp32")


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("epochs",), -1, "runs.gan-mnist.epochs: input should be greater than 0 (got -1)"),
        (("epochs",), "ten", "runs.gan-mnist.epochs: input should be a valid integer"),
        (("lr",), 0, "runs.gan-mnist.lr: input should be greater than 0"),
        (("model",), "vae", "runs.gan-mnist.model: input should be 'gan' or 'dcgan'"),
        (("loss",), "hinge", "runs.gan-mnist.loss:"),
        (("device",), "tpu", "runs.gan-mnist.device: value error, must be auto, cpu, mps, cuda or cuda:N (got 'tpu')"),
        (("batchsize",), 64, "runs.gan-mnist.batchsize: unknown key"),
    ],
)
def test_bad_run_values_name_the_key(tmp_path, path, value, expected):
    data = base()
    data["runs"]["gan-mnist"][path[0]] = value
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, data))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'params.yaml'}: ")
    assert expected in message


def test_unknown_top_level_key_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match=r"mnsit: unknown key"):
        load_params(write(tmp_path, {**base(), "mnsit": {"source": "x"}}))
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "runs: [unclosed"))
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_unknown_run_and_bad_run_name(tmp_path):
    params = load_params(write(tmp_path, base()))
    with pytest.raises(ParamsError, match=r"runs.nope: no such run \(known: gan-mnist\)"):
        params.run("nope")
    data = {"runs": {"../escape": {"model": "gan", "dataset": "mnist"}}}
    with pytest.raises(ParamsError, match="run name"):
        load_params(write(tmp_path, data))


def test_a_declared_comparison_must_name_a_run_or_a_seed_group(tmp_path):
    data = {"runs": {f"gan-mnist-s{i}": {"model": "gan", "dataset": "mnist", "seed": i} for i in range(2)},
            "report": {"comparisons": [["gan-mnist", "gan-mnist-s1"]]}}
    assert load_params(write(tmp_path, data)).report.comparisons == [("gan-mnist", "gan-mnist-s1")]
    data["report"]["comparisons"] = [["gan-mnist", "dcgan-mnist"]]
    with pytest.raises(ParamsError, match="report: .*comparisons: 'dcgan-mnist' is neither a run nor a seed group"):
        load_params(write(tmp_path, data))
    data["report"]["comparisons"] = [["gan-mnist"]]
    with pytest.raises(ParamsError, match="report.comparisons.0"):
        load_params(write(tmp_path, data))


def test_defaults_fill_in():
    params = Params.model_validate(base())
    run = params.run("gan-mnist")
    assert (run.loss, run.d_steps, run.device, run.nz) == ("non_saturating", 1, "auto", 100)


def test_cli_stops_before_any_work_with_one_line(tmp_path):
    data = base()
    data["runs"]["gan-mnist"]["epochs"] = 0
    params = write(tmp_path, data)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--params", str(params), "train", "gan-mnist"],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {params}: runs.gan-mnist.epochs: input should be greater than 0 (got 0)"]
    assert not (tmp_path / "runs").exists()


def test_every_params_key_dvc_tracks_is_in_params_yaml():
    """DVC refuses to run a stage whose `params:` key is missing from params.yaml, and the
    defaults in config.py are invisible to it: so every tracked key must be written out."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    missing = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        keys = [k for entry in body.get("params", []) for k in ([entry] if isinstance(entry, str) else entry)]
        items = raw["runs"] if "foreach" in stage and stage["foreach"] == "${runs}" else {None: None}
        for run in items:
            for key in keys:
                node = raw
                for part in key.replace("${key}", str(run)).split("."):
                    node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
                if node is KeyError:
                    missing.append(f"{name}: {key}")
    assert not missing


def _values(node, parts: list[str]):
    """Every value at a dotted path with `*` for each run / crawl source (KeyError if one lacks it)."""
    if not parts:
        return [node]
    head, rest = parts[0], parts[1:]
    if head == "*":
        items = node.values() if isinstance(node, dict) else node
        return [v for item in items for v in _values(item, rest)]
    return _values(node[head], rest)


def test_params_yaml_spells_out_every_key_of_every_model():
    """A default that lives only in config.py would change results behind DVC's back (DVC tracks
    the file, not config.py): every field of every params model, derived from the models
    themselves (tests/dag_audit.py params_fields), is written out in params.yaml, for every run
    and every crawl source."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    fields = params_fields()
    assert len(fields) > 90 and "AnimeFacesParams.near_duplicate_distance" in fields  # the walk reaches every section
    missing = []
    for name, (key, _) in fields.items():
        try:
            _values(raw, key.split("."))
        except (KeyError, TypeError):
            missing.append(key)
    assert not missing, f"params.yaml lacks {missing}"


def _stage_params(stage: dict, runs: list[str]) -> list[str]:
    body = stage.get("do", stage)
    keys = [k for entry in body.get("params", []) for k in ([entry] if isinstance(entry, str) else entry)]
    names = runs if stage.get("foreach") == "${runs}" else [None]
    return [k.replace("${key}", str(name)) for name in names for k in keys]


def test_no_stage_tracks_a_speed_only_key_and_each_result_key_is_tracked_somewhere():
    """Speed-only keys (config.SPEED_ONLY) are in no stage's params, so changing one re-runs
    nothing; every other key is tracked by at least one stage (which stages read which key is
    checked on a real `dvc repro` by the end-to-end test's params recorder)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    runs = list(yaml.safe_load((REPO / "params.yaml").read_text())["runs"])
    tracked = {name: _stage_params(stage, runs) for name, stage in stages.items()}
    speed = {key for key, field in params_fields().values() if speed_only(field)}
    assert {"evaluate.batch_size", "evaluate.inception_compile", "celeba.workers", "anime.faces.workers",
            "anime.crawl.download_delay"} <= speed
    wrong = [f"{stage}: {t} holds {key}" for stage, keys in tracked.items() for t in keys for key in speed
             if _covers(t, key)]
    assert not wrong
    untracked = [key for key, field in params_fields().values() if not speed_only(field)
                 and not any(_covers(t, key) for keys in tracked.values() for t in keys)]
    assert not untracked, f"no stage tracks {untracked}"


def test_meta_json_params_leave_out_exactly_the_speed_only_keys():
    """The datasets' meta.json records the keys that made their bytes (config.result_keys): every
    field of the model but the SPEED_ONLY ones, so two crops that differ only in workers write the
    same meta.json and the same dataset hash."""
    from pipeline.config import AnimeFacesParams, CelebaParams, result_keys

    faces = AnimeFacesParams(workers=3)
    assert set(result_keys(faces)) == set(AnimeFacesParams.model_fields) - {"workers"}
    assert result_keys(faces) == result_keys(AnimeFacesParams(workers=1))
    celeba = CelebaParams(source="x", workers=2)
    assert set(result_keys(celeba, also_exclude={"probe_attributes"})) == (
        set(CelebaParams.model_fields) - {"workers", "probe_attributes"})


def test_compiling_bf16_through_inception_compile_is_refused_with_the_key_that_does_it(tmp_path):
    """bf16 + inception_compile: true once meant compiled bf16; now it is its own precision, so the
    old spelling fails loudly instead of silently running uncompiled bf16."""
    data = base()
    data["evaluate"] = {"inception_precision": "bf16", "inception_compile": True}
    with pytest.raises(ParamsError, match="evaluate: .*inception_precision: bf16-compiled"):
        load_params(write(tmp_path, data))
    data["evaluate"] = {"inception_precision": "bf16-compiled", "inception_compile": "auto"}
    assert load_params(write(tmp_path, data)).evaluate.inception_arithmetic == ("bf16", True)
