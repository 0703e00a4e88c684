"""Local results (result.json, summary) and the offline W&B run, read back from its files."""

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cachelab import StepRecord
from cachelab.tracking import results, sweep, wandb_run

LOGGER = SimpleNamespace(name="wandb", project="cachelab-tests", entity=None, mode="offline", group=None, tags=["test"])


def wandb_records(run_file: Path, block: int = 32768):
    """The protobuf records of a .wandb file (a LevelDB-style log after a 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending = run_file.read_bytes(), 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_run(directory: Path, timeout: float = 10.0) -> dict:
    """Summary, config keys, group, history keys and exit code of the one offline run under `directory`
    (waiting for the exit record: wandb's service may still be writing when `finish()` returns)."""
    deadline = time.monotonic() + timeout
    while "exit_code" not in (found := read_offline_run(directory)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def read_offline_run(directory: Path) -> dict:
    (run_file,) = directory.glob("wandb/offline-run-*/run-*.wandb")
    found = {"summary": {}, "history": set()}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found.update(group=record.run.run_group, name=record.run.display_name,
                         config={item.key for item in record.run.config.update})
        elif kind == "summary":
            found["summary"].update({item.key: json.loads(item.value_json) for item in record.summary.update})
        elif kind == "history":
            found["history"] |= {item.key or item.nested_key[0] for item in record.history.item}
        elif kind == "exit":
            found["exit_code"] = record.exit.exit_code
    return found


def fake_outcome():
    rng = np.random.default_rng(0)
    reference = rng.random((2, 16, 16, 3), dtype=np.float32)
    def step(i, computed):
        return StepRecord(i, "cond", computed, None if computed else 0.01, 0.01, 1 - i / 4, work=1.0 if computed else 0.1)
    traces = [[step(0, True), step(1, False), step(2, True)]] * 2
    return SimpleNamespace(reference=reference, cached=np.clip(reference + 0.05, 0, 1), traces=traces)


RESULT = dict(policy="first_block", model="digits", threshold=0.1, speedup=1.7, ideal_speedup=2.0, psnr=float("inf"),
              ssim=0.98, computed_fraction=0.5, computed_fraction_per_branch={"cond": 0.5}, computed_steps=14.0,
              computed_work=0.55, steps=28, digit_accuracy=1.0, reference_digit_accuracy=0.9, policy_params={"threshold": 0.1},
              metric={"name": "digit_accuracy", "format": "{:.0%}"})


def test_an_offline_wandb_run_holds_config_metrics_samples_and_trace(tmp_path):
    with wandb_run.wandb_run(LOGGER, config={"threshold": 0.1, "model": {"name": "digits"}}, name="job-0",
                            group="sweep-1", directory=tmp_path, quiet=True) as run:
        wandb_run.log_outcome(run, RESULT, fake_outcome())
    found = offline_run(tmp_path)
    assert found["summary"]["speedup"] == 1.7 and found["summary"]["computed_fraction_per_branch/cond"] == 0.5
    assert found["summary"]["psnr"] is None  # W&B gets no infinities
    assert {"samples", "trace"} <= found["history"]
    assert {"threshold", "model"} <= found["config"]
    assert (found["group"], found["name"], found["exit_code"]) == ("sweep-1", "job-0", 0)


def test_a_failed_job_finishes_its_wandb_run_as_failed(tmp_path):
    with pytest.raises(RuntimeError):
        with wandb_run.wandb_run(LOGGER, config={}, name="job", group=None, directory=tmp_path, quiet=True):
            raise RuntimeError("boom")
    assert offline_run(tmp_path)["exit_code"] == 1


def test_logger_none_starts_nothing(tmp_path):
    with wandb_run.wandb_run(SimpleNamespace(name="none"), config={}, name="x", group=None,
                            directory=tmp_path, quiet=True) as run:
        assert run is None
    assert not (tmp_path / "wandb").exists()


def test_offline_unless_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_run.wandb_configured()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password key\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_run.wandb_configured()


def test_job_files_and_sweep_summary(tmp_path):
    outcome = fake_outcome()
    results.save_job(tmp_path / "0_threshold=0.1", RESULT, outcome)
    results.save_job(tmp_path / "1_threshold=0.2", dict(RESULT, threshold=0.2, status="failed", error="boom"))
    job = tmp_path / "0_threshold=0.1"
    assert json.loads((job / "result.json").read_text(), parse_constant=pytest.fail)["psnr"] is None  # strict JSON
    assert results.read_result(job / "result.json")["psnr"] == float("inf")
    assert (job / "trace.csv").read_text().splitlines()[0] == ",".join(results.TRACE_COLUMNS)
    assert len((job / "trace.csv").read_text().splitlines()) == 1 + 6
    assert {p.name for p in (job / "images").iterdir()} >= {"000_reference.png", "001_cached.png", "001_difference.png"}
    assert (job / "grid.png").is_file()
    rows = sweep.write_summary(tmp_path)
    assert [(row["job"], row["status"]) for row in rows] == [("0_threshold=0.1", "done"), ("1_threshold=0.2", "failed")]
    table = (tmp_path / "summary.md").read_text()
    assert "| 0_threshold=0.1 | first_block | 0.1" in table and "inf" in table and "1.70x" in table and "| 55% " in table
    assert "| digit_accuracy | reference digit_accuracy |" in table and "| 100%" in table and "| 90%" in table
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and summary[0].endswith("psnr,ssim,digit_accuracy,reference_digit_accuracy,error")
    assert ",28,0.55,1.7,2.0,,,0.98,1.0,0.9," in summary[1]  # the infinite PSNR is an empty cell


def test_a_metric_of_several_numbers_has_a_summary_column_each(tmp_path):
    metric = dict(name="video_accuracy", format="digit {0[digit]:.0%}, motion {0[motion]:.0%}")
    result = dict(RESULT, metric=metric, video_accuracy=dict(digit=0.75, motion=1.0),
                  reference_video_accuracy=dict(digit=0.8, motion=1.0))
    del result["digit_accuracy"], result["reference_digit_accuracy"]
    results.save_job(tmp_path / "0_threshold=0.1", result)
    sweep.write_summary(tmp_path)
    header, row = (tmp_path / "summary.csv").read_text().splitlines()
    assert header.endswith("psnr,ssim,video_accuracy.digit,video_accuracy.motion,reference_video_accuracy.digit,"
                           "reference_video_accuracy.motion,error")
    assert row.endswith(",0.75,1.0,0.8,1.0,")


def test_scalars_flatten_nested_values_and_drop_lists():
    flat = wandb_run.scalars({"a": 1.0, "b": {"c": float("nan")}, "d": [1, 2], "e": None})
    assert flat == {"a": 1.0, "b/c": None, "e": None}
