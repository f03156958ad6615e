"""The demo's result object, and experiment files that reach real HTTP (a loopback server)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from afperturb import cli
from afperturb.cli._experiment import load_experiment
from afperturb.demo import DemoResult, format_demo, run_demo
from afperturb.design import Perturbation
from afperturb.errors import DesignError
from afperturb.models.simulated import PROFILES
from tests._loopback import LoopbackServer

PAPER = len(Perturbation.preset("paper"))  # conditions of the paper preset


def test_run_demo_in_process(tmp_path: Path) -> None:
    seen: list[str] = []
    demo = run_demo(
        requests=120,  # the Pro–Enterprise pair alone carries rater sycophancy
        models=["sim/sycophant", "sim/sycophant"],  # duplicates are dropped
        store=tmp_path / "d.sqlite",
        jobs=1,
        on_model_done=lambda model, seconds: seen.append(model),
    )
    assert isinstance(demo, DemoResult) and seen == ["sim/sycophant"]
    assert demo.trials == PAPER * 120 and demo.total == 4 and demo.all_hit
    frame = demo.to_frame()
    assert list(frame["hypothesis"]) == list(PROFILES["sycophant"].planted())
    syc = frame.set_index("hypothesis").loc["rater_sycophancy"]
    assert syc["verdict"] == "supported" and syc["planted"] and syc["hit"]
    assert 0.05 < syc["estimate"] < 0.35 and syc["ci_low"] < syc["estimate"] < syc["ci_high"]
    assert syc["expected"] == "supported" and syc["paper"] == ""
    assert repr(demo).startswith(f"<DemoResult 1 models × 120 requests: {PAPER * 120} trials, 4/4")
    assert demo.to_markdown().startswith("| model | hypothesis | paper | afperturb | verdict |")
    assert "<table>" in demo._repr_html_() and "rater sycophancy" in demo._repr_html_()
    text = format_demo(demo)
    assert "4/4 cells match the planted truth" in text and "elapsed" in text


def test_a_reused_store_is_scoped_to_this_demo(tmp_path: Path) -> None:
    store = tmp_path / "d.sqlite"
    run_demo(requests=12, models=["sim/no-gap"], store=store, jobs=1)
    demo = run_demo(requests=6, models=["sim/no-gap"], store=store, jobs=1, seed=0)
    assert demo.trials == PAPER * 6  # the 12-request run's extra requests stay out
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == PAPER * 12


def test_demo_rejects_bad_arguments() -> None:
    with pytest.raises(DesignError, match="unknown demo model 'openai/gpt-4o'"):
        run_demo(requests=5, models=["openai/gpt-4o"])
    with pytest.raises(DesignError, match="jobs must be >= 1"):
        run_demo(requests=5, jobs=0)
    with pytest.raises(DesignError, match="at least one model"):
        run_demo(requests=5, models=[])


def test_experiment_requests_forms(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("prompt,cat\nExplain tides.,science\nBake bread.,household\n")
    exp = tmp_path / "e.toml"
    exp.write_text('models = "sim/no-gap"\nrequests = { path = "r.csv", text = "prompt" }\n')
    loaded = load_experiment(exp)
    assert [r.text for r in loaded.load_requests()] == ["Explain tides.", "Bake bread."]
    assert loaded.store_path() == tmp_path / "runs.sqlite"
    assert loaded.perturbation().conditions()  # no preset, no axes: the default condition
    exp.write_text('models = ["sim/no-gap"]\nrequests = "r.csv"\n')
    with pytest.raises(DesignError, match="unknown column 'text'"):
        load_experiment(exp).load_requests()
    exp.write_text('models = ["sim/no-gap"]\nrequests = { synthetic = 4, path = "r.csv" }\n')
    with pytest.raises(DesignError, match="exactly one of synthetic, dataset, path"):
        load_experiment(exp).load_requests()
    exp.write_text('models = ["sim/no-gap"]\nrequests = 5\npreset = "paper"\n[vary]\ntier = []\n')
    with pytest.raises(DesignError, match="either preset or vary/fixed"):
        load_experiment(exp).perturbation()


def test_sweep_and_judges_over_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = LoopbackServer()
    with server.in_thread():
        url = f"http://{server.host}:{server.port}/v1"
        exp = tmp_path / "e.toml"
        (tmp_path / "out").mkdir()  # a store's folder must exist (issue 14: never created)
        exp.write_text(
            'preset = "null_control"\nrequests = 4\nstore = "out/http.sqlite"\n'
            f'models = [{{ name = "openai/chat", base_url = "{url}" }}]\n'
            'judges = ["af_reasoning"]\n'
            f'judge_model = {{ name = "openai/j", base_url = "{url}" }}\n'
            "[params]\ntemperature = 0.0\nmax_tokens = 100\n"
        )
        code = cli.main(["sweep", str(exp), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "openai/chat: 8 trials (2 conditions), 0 failed, 0 cached" in out
    assert out.splitlines()[-1] == f"store: {tmp_path / 'out' / 'http.sqlite'}"
    assert "af_reasoning: 8 labelled" in out  # the loopback is no judge: errors, but wired
    code = cli.main(["attribute", str(tmp_path / "out" / "http.sqlite"), "--format", "json"])
    assert code == 0
    # The loopback rejects unless a prompt carries its "tier=free" marker (ours never do).
    rows = [r["complied"] for r in _trials(tmp_path / "out" / "http.sqlite")]
    assert rows == [0] * 8


def _trials(db: Path) -> list[dict[str, int]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT complied FROM labels WHERE classifier='tags' AND complied IS NOT NULL"
        ).fetchall()
    return [{"complied": c} for (c,) in found]


def test_demo_miss_exits_1_and_interrupt_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import afperturb.demo as demo_module

    real = run_demo(requests=6, models=["sim/no-gap"], store=tmp_path / "d.sqlite", jobs=1)
    frame = real.comparison.copy()
    frame["hit"] = True  # whatever 6 requests gave, exactly one cell misses
    frame.loc[0, "hit"] = False
    missed = DemoResult(frame, real.table, real.store, 6, real.trials, 0, 0.1, real.sweep_s)
    monkeypatch.setattr(demo_module, "run_demo", lambda *a, **k: missed)
    assert cli.main(["demo", "--quiet", "--models", "sim/no-gap"]) == 1
    assert "3/4 cells match" in capsys.readouterr().out

    def interrupted(*args: object, **kwargs: object) -> DemoResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "run_demo", interrupted)
    assert cli.main(["demo", "--quiet"]) == 130
    assert capsys.readouterr().err == "afperturb: interrupted\n"
