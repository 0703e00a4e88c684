import json

from cachelab.report import load_results, main, pareto_front


def write(folder, job, **result):
    (folder / job).mkdir(parents=True)
    row = dict(status="done", threshold=None, computed_steps=10.0, steps=28, ideal_speedup=1.0, ssim=0.99, **result)
    (folder / job / "result.json").write_text(json.dumps(row))


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
