import json
from pathlib import Path

import matplotlib.pyplot as plt

from cachelab.report import by_setting, load_results, main, pareto_front


def write(folder, job, **result):
    (folder / job).mkdir(parents=True)
    row = dict(status="done", threshold=None, computed_steps=10.0, steps=28, ideal_speedup=1.0, ssim=0.99)
    (folder / job / "result.json").write_text(json.dumps({**row, **result}))


def setting(model, height, steps, prompts, seed=0):
    """The keys a run of `python -m cachelab` writes about its setting."""
    return dict(model=model, steps=steps, prompts=prompts, num_prompts=len(prompts), seed=seed,
                config=dict(height=height, width=height, steps=steps, seed=seed))


def test_pareto_front_keeps_runs_no_other_beats_on_speed_and_quality():
    runs = [dict(speedup=s, psnr=p) for s, p in [(1.0, 50.0), (1.5, 40.0), (1.4, 35.0), (2.0, 30.0), (2.0, 29.0)]]
    assert pareto_front(runs) == [runs[0], runs[1], runs[3]]


def test_report_reads_finished_runs_and_plots_them(tmp_path, capsys):
    write(tmp_path, "0_a", policy="first_block", speedup=1.5, psnr=40.0)
    write(tmp_path, "1_b", policy="first_block", speedup=2.0, psnr=35.0)
    write(tmp_path, "2_c", policy="fixed_interval", speedup=1.8, psnr=30.0)
    (tmp_path / "3_failed").mkdir()
    (tmp_path / "3_failed" / "result.json").write_text(json.dumps(dict(status="failed", policy="teacache")))
    assert [r["job"] for r in load_results([tmp_path])] == ["0_a", "1_b", "2_c"]
    main([str(tmp_path), "--out", str(tmp_path / "pareto.png")])
    table = capsys.readouterr().out
    assert "* 0_a" in table and "* 1_b" in table and "  2_c" in table and "3_failed" not in table
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_of_different_models_get_a_front_and_a_panel_each(tmp_path, capsys, monkeypatch):
    digits = setting("digits", 32, 8, ["a handwritten digit 3", "a handwritten digit 7"])
    write(tmp_path / "sweep", "0_threshold=0.05", policy="first_block", speedup=1.2, psnr=40.0, **digits)
    write(tmp_path / "sweep", "1_threshold=0.2", policy="first_block", speedup=1.6, psnr=30.0, **digits)
    write(tmp_path / "sweep", "2_interval=3", policy="fixed_interval", speedup=1.5, psnr=25.0, **digits)
    write(tmp_path / "sweep", "3_oracle", policy="oracle", speedup=2.0, psnr=45.0, bound=True, **digits)
    # one run of another model, with a result.json directly in the folder given; it beats every digits run
    write(tmp_path, "flux_run", policy="first_block", speedup=2.5, psnr=50.0, **setting("flux", 64, 28, ["a cat"]))
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    main([str(tmp_path / "sweep"), str(tmp_path / "flux_run"), "--out", str(tmp_path / "pareto.png")])
    out = capsys.readouterr().out
    digits_part, flux_part = out.split("## flux 64x64, 28 steps, 1 prompt, seed 0")
    assert "## digits 32x32, 8 steps, 2 prompts, seed 0" in digits_part
    for job, mark in [("0_threshold=0.05", "*"), ("1_threshold=0.2", "*"), ("2_interval=3", " "), ("3_oracle", " ")]:
        assert f"| {mark} {job} " in digits_part
    assert "| * flux_run | flux " in flux_part and "| model " in flux_part and "| digits " in digits_part
    assert "| * . " not in out and "| oracle (bound)" in digits_part

    [figure] = figures
    assert [axes.get_title() for axes in figure.axes] == ["digits 32x32, 8 steps, 2 prompts, seed 0",
                                                          "flux 64x64, 28 steps, 1 prompt, seed 0"]
    for axes, speeds in zip(figure.axes, [{1.2, 1.6, 1.5, 2.0}, {2.5}]):
        lines = {line.get_label(): list(line.get_xdata()) for line in axes.get_lines()}
        assert set().union(*lines.values()) == speeds  # no line reaches into the other model's panel
    assert lines == {"first_block": [2.5], "Pareto front": [2.5]}
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_split_on_resolution_steps_prompts_and_seed_and_tolerate_old_results():
    base = setting("digits", 32, 8, ["a", "b"])
    runs = [dict(base), dict(base), setting("digits", 64, 8, ["a", "b"]), setting("digits", 32, 12, ["a", "b"]),
            setting("digits", 32, 8, ["a", "c"]), setting("digits", 32, 8, ["a", "b"], seed=5),
            dict(model="digits", steps=8), {}]
    groups = by_setting(runs)
    assert len(groups) == 7 and groups[next(k for k, v in groups.items() if runs[0] in v)] == runs[:2]
    assert "digits, 8 steps" in groups and "model ?" in groups and "digits 32x32, 8 steps, 2 prompts, seed 5" in groups
    same_name = [name for name in groups if name.startswith("digits 32x32, 8 steps, 2 prompts, seed 0")]
    assert len(same_name) == 2 and all(", prompts #" in name for name in same_name)


def test_a_single_run_is_named_after_its_folder(tmp_path, monkeypatch):
    write(tmp_path, "my_run", policy="first_block", speedup=1.5, psnr=40.0)
    assert [r["job"] for r in load_results([tmp_path / "my_run"])] == ["my_run"]
    monkeypatch.chdir(tmp_path / "my_run")
    assert [r["job"] for r in load_results([Path(".")])] == ["my_run"]
