"""The complete CLI, run as subprocesses (``python -m afperturb ...``) like a user runs it.

One store is swept once per module (the example experiment, 2 simulated models × 3 conditions
× 200 requests, ~2 s) and every store-reading command runs on it. Error paths check the exit
code and that no traceback reaches the terminal.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from afperturb import cli
from afperturb.cli._analyse import cache_size, prune_cache
from afperturb.design import Perturbation
from tests._loopback import LoopbackServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "experiment.toml"


def afperturb(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AFPERTURB_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "afperturb", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or "/tmp",
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.startswith("afperturb: error: ") or code == 2
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def inproc(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The same main() in this process: the cheap way to cover more error paths."""
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "example.sqlite"
    out = ok(afperturb("sweep", str(EXAMPLE), "--store", str(path), "--quiet"))
    assert "sim/sycophant: 600 trials (3 conditions), 0 failed, 0 cached" in out
    assert "sim/no-gap: 600 trials (3 conditions), 0 failed, 0 cached" in out
    return path


# ---------------------------------------------------------------------- data-producing commands


def test_demo_small_matches_planted_truth(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    out = ok(
        afperturb(
            "demo", "--requests", "120", "--models", "sim/sycophant", "sim/no-gap",
            "--store", str(db), "--jobs", "1", "--quiet",
        )
    )  # fmt: skip
    assert "8/8 cells match the planted truth" in out
    n = len(Perturbation.preset("paper"))
    assert f"{2 * n * 120} trials (2 models × {n} conditions × 120 requests)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("sim/")]
    assert len(rows) == 8
    syc = next(r for r in rows if r[0] == "sim/sycophant" and r[1:3] == ["rater", "sycophancy"])
    assert syc[3:6] == ["✓", "✓", "supported"] and syc[-1] == "hit"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 2 * n * 120


def test_demo_in_two_processes_shares_one_store(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    result = afperturb(
        "demo", "--requests", "10", "--models", "sim/opus-like", "sim/no-gap",
        "--store", str(db), "--jobs", "2",
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr  # 10 requests: power is not the point
    assert "sim/opus-like: swept in" in result.stderr and "sim/no-gap: swept in" in result.stderr
    n = len(Perturbation.preset("paper")) * 10
    assert f"{2 * n} trials" in result.stdout
    with sqlite3.connect(db) as conn:
        models = conn.execute("SELECT model, COUNT(*) FROM trials GROUP BY model").fetchall()
    assert sorted(models) == [("sim/no-gap", n), ("sim/opus-like", n)]


def test_sweep_is_cached_on_rerun(store: Path) -> None:
    out = ok(afperturb("sweep", str(EXAMPLE), "--store", str(store), "--quiet"))
    assert "sim/sycophant: 600 trials (3 conditions), 0 failed, 600 cached" in out


def test_sweep_estimate_sends_nothing(tmp_path: Path) -> None:
    out = ok(afperturb("sweep", str(EXAMPLE), "--store", str(tmp_path / "x.sqlite"), "--estimate"))
    assert out.count("600 trials") == 2 and "<CostEstimate sim/no-gap" in out
    assert not (tmp_path / "x.sqlite").exists()


def test_classify_heuristic_offline(store: Path) -> None:
    out = ok(afperturb("classify", str(store), "--judge", "heuristic_motive"))
    assert out.startswith("heuristic_motive: 1200 labelled")
    with sqlite3.connect(store) as conn:
        n = conn.execute(
            "SELECT COUNT(*) FROM labels WHERE classifier='heuristic_motive'"
        ).fetchone()[0]
    assert n == 1200


def test_classify_llm_judge_against_a_loopback_server(tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text('preset = "null_control"\nmodels = ["sim/no-gap"]\nrequests = 3\n')
    assert cli.main(["sweep", str(exp), "--quiet"]) == 0
    server = LoopbackServer()
    with server.in_thread():
        url = f"http://{server.host}:{server.port}/v1"
        result = afperturb(
            "classify", str(tmp_path / "runs.sqlite"), "--judge", "af_reasoning",
            "--model", "openai/judge", "--base-url", url, "--votes", "1",
        )  # fmt: skip
    # The loopback answers like a chat model, not like a judge: every label is an error,
    # and the exit code says so (it was 0).
    fails(result, 3, "judge 'af_reasoning': every label of 6 failed; first error: ")
    assert result.stdout.startswith("af_reasoning: 6 labelled, 0 already labelled, 6 errors")
    assert server.requests >= 6


# ---------------------------------------------------------------------- store-reading commands


def test_attribute_formats(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(afperturb("attribute", str(store)))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "hypothesis", "verdict"]
    syc = next(line for line in lines if line.startswith("sim/sycophant  rater_sycophancy"))
    assert "supported" in syc
    base = next(line for line in lines if line.startswith("sim/sycophant  null_control"))
    assert "baseline: " in base
    code, out, _ = inproc(["attribute", str(store), "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and len(data) == 10  # 2 models × (4 hypotheses + the baseline row)
    row = next(
        r for r in data if r["model"] == "sim/sycophant" and r["hypothesis"] == "rater_sycophancy"
    )
    assert row["verdict"] == "supported" and 0.1 < row["estimate"] < 0.3
    assert row["rule"].startswith("rater_sycophancy:")


@pytest.mark.parametrize(
    ("fmt", "start"),
    [("markdown", "| model |"), ("csv", "model,hypothesis,verdict"), ("latex", "\\begin{tabular}")],
)
def test_attribute_other_formats_in_process(
    store: Path, fmt: str, start: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["attribute", str(store), "--format", fmt, "--model", "sim/no-gap", "--alpha", "0.01"]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(start)
    assert "sim/sycophant" not in out and "sim/no-gap" in out


def test_report(store: Path, tmp_path: Path) -> None:
    out = ok(afperturb("report", str(store), "--out", str(tmp_path / "rep"), "--max-requests", "5"))
    assert f"wrote {tmp_path / 'rep' / 'report.html'}" in out
    assert (tmp_path / "rep" / "report.md").read_text().strip()


def test_cache_size(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = inproc(["cache", str(store), "size"], capsys)
    assert code == 0
    assert f"{store}: " in out and "trials 1,200" in out
    info = cache_size(store)
    assert info["trials"] == 1200 and info["completions"] >= 1200
    assert info["file_bytes"] > info["completion_bytes"] > 0


def test_cache_prune_removes_only_unreferenced(tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    base = 'preset = "null_control"\nmodels = ["sim/no-gap"]\nrequests = 20\n'
    exp.write_text(base + "[params]\ntemperature = 1.0\n")
    assert cli.main(["sweep", str(exp), "--quiet"]) == 0
    exp.write_text(base + "[params]\ntemperature = 0.0\n")  # another configuration
    assert cli.main(["sweep", str(exp), "--quiet"]) == 0
    db = tmp_path / "runs.sqlite"
    assert cache_size(db)["trials"] == 80  # beside the first run's 40, never replacing them
    assert prune_cache(db, dry_run=True)["completions"] == 0  # both runs reference theirs
    with sqlite3.connect(db) as conn:  # what schema 1 did: the second sweep replaced the first
        first = conn.execute("SELECT run_id FROM runs ORDER BY created").fetchone()[0]
        conn.execute("DELETE FROM trials WHERE run_id = ?", (first,))
    before = cache_size(db)
    assert before["trials"] == 40
    dry = prune_cache(db, dry_run=True)
    assert dry["completions"] == before["completions"] - 40 - _turns_beyond_first(db)
    assert cache_size(db)["completions"] == before["completions"]
    out = ok(afperturb("cache", str(db), "prune"))
    assert f"deleted {dry['completions']} unreferenced completion(s)" in out
    after = cache_size(db)
    assert after["completions"] == before["completions"] - dry["completions"]
    assert after["file_bytes"] < before["file_bytes"]
    # Every trial still reads back whole, so re-analysis works after a prune.
    assert cli.main(["attribute", str(db), "--format", "csv"]) == 0
    again = prune_cache(db)
    assert again["completions"] == 0 and again["texts"] == 0


def _turns_beyond_first(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        turns = [json.loads(t) for (t,) in conn.execute("SELECT turns FROM trials")]
    return sum(max(0, len(t) - 1) for t in turns)


# ---------------------------------------------------------------------- planning and design


def test_plan_sample_size_and_power(capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(afperturb("plan", "--gap", "0.05", "--rate", "0.12", "--correlation", "0.3"))
    assert out.startswith("n = 730 requests per condition for power 0.9")
    args = ["plan", "--gap", "0.10", "--rate", "0.12", "--n", "400", "--correlation", "0.2"]
    code, out, _ = inproc(args, capsys)
    assert code == 0 and out.startswith("power 0.988 to detect a gap of 0.1 with n = 400")


def test_design_commands_as_subprocesses() -> None:
    out = ok(afperturb("conditions", "--preset", "rater_sycophancy"))
    assert len(out.strip().splitlines()) == 3
    out = ok(afperturb("render", "--preset", "null_control", "--condition", "1"))
    assert "<is_free_tier_user>false</is_free_tier_user>" in out
    out = ok(afperturb("diff", "--preset", "null_control", "0", "1"))
    assert "+<is_free_tier_user>false</is_free_tier_user>" in out


def test_help_everywhere_has_examples_and_exit_codes() -> None:
    out = cli.build_parser().format_help()
    assert "exit codes:" in out and "130" in out and "afperturb sweep examples/" in out
    for name in cli.COMMANDS:
        parser = cli.build_parser()
        sub = parser._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr,index]
        text = sub.format_help()
        assert "examples:" in text, name
        assert "exit codes:" in text, name


# ---------------------------------------------------------------------- error paths


def test_unknown_preset_in_experiment(tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text('preset = "nope"\nmodels = ["sim/no-gap"]\nrequests = 3\n')
    fails(afperturb("sweep", str(exp)), 2, "unknown preset 'nope'", "'rater_sycophancy'")


def test_bad_toml_is_one_line_exit_2(tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text('preset = "paper"\nmodels = [\n')
    err = fails(afperturb("sweep", str(exp)), 2, "invalid TOML")
    assert len(err.strip().splitlines()) == 1


def test_bad_fields_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text('preset = "paper"\nmodels = []\nrequests = 3\nsampels = 2\n')
    code, _, err = inproc(["sweep", str(exp)], capsys)
    assert code == 2 and "models:" in err and "sampels:" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = inproc(["sweep", str(tmp_path / "missing.toml")], capsys)
    assert code == 2 and "cannot read experiment file" in err
    exp.write_text('preset = "null_control"\nmodels = ["sim/genius"]\nrequests = 3\n')
    code, _, err = inproc(["sweep", str(exp)], capsys)
    assert code == 2 and "unknown simulated profile 'genius'" in err
    exp.write_text('preset = "null_control"\nmodels = ["sim/no-gap"]\nrequests = "nope.csv"\n')
    code, _, err = inproc(["sweep", str(exp)], capsys)
    assert code == 2 and "nope.csv" in err and "does not exist" in err
    exp.write_text('vary = { tier = ["free", "gold"] }\nmodels = ["sim/no-gap"]\nrequests = 3\n')
    code, _, err = inproc(["sweep", str(exp)], capsys)
    assert code == 2 and "unknown level 'gold'" in err


def test_store_errors_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "none.sqlite")
    fails(afperturb("attribute", missing), 3, "no store at")
    for args in (["cache", missing, "size"], ["report", missing], ["classify", missing,
                 "--judge", "tags"]):  # fmt: skip
        code, _, err = inproc(args, capsys)
        assert code == 3 and "no store at" in err, args
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database")
    code, _, err = inproc(["cache", str(junk), "size"], capsys)
    assert code == 3 and "not an afperturb store" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    result = afperturb("conditions", "--preset", "nope")
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    cases = [
        (["plan", "--gap", "0.05", "--rate", "0.12", "--alpha", "2"], "--alpha"),
        (["plan", "--gap", "0.95", "--rate", "0.12"], "must lie in [0, 1]"),
        (["demo", "--models", "sim/nobody", "--requests", "5"], "unknown demo model"),
        (["demo", "--requests", "1"], "requests must be >= 2"),
        (["classify", str(EXAMPLE), "--judge", "af_reasoning"], "need --model"),
    ]
    for args, needle in cases:
        code, _, err = inproc(args, capsys)
        assert code == 2 and needle in err, (args, err)
        assert err.startswith("afperturb: error: ")


def test_exit_code_policy() -> None:
    from afperturb.cli._core import exit_code
    from afperturb.errors import BackendTimeout, ClassifierError, DesignError, StoreError

    assert exit_code(DesignError("x")) == 2
    assert exit_code(ClassifierError("x")) == 2
    assert exit_code(BackendTimeout("x")) == 3
    assert exit_code(StoreError("x")) == 3
    assert exit_code(PermissionError("x")) == 3
    assert exit_code(ZeroDivisionError("x")) == 4
