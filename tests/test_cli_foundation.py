from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from afperturb import cli
from afperturb.design import PRESETS, Perturbation
from afperturb.scenario import Scenario

REPO = Path(__file__).resolve().parent.parent


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "afperturb", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd="/tmp",
        timeout=120,
        check=False,
    )


def test_registry_has_the_foundation_commands() -> None:
    assert {"conditions", "render", "diff", "templates", "demo"} <= set(cli.COMMANDS)
    assert next(iter(cli.COMMANDS)) == "demo"


def test_conditions_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["conditions", "--preset", "rater_sycophancy"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3
    ids = [c.id for c in Perturbation.preset("rater_sycophancy").conditions()]
    assert all(i in line for i, line in zip(ids, lines, strict=True))
    assert "rater_scrutiny=pro" in lines[1] and "trained=0 rated=1 rater=human" in lines[1]


def test_conditions_vary_fixed_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["conditions", "--vary", "tier=free,paid", "--fixed", "lab=openai", "--json"], capsys
    )
    assert code == 0
    data = json.loads(out)
    assert [c["levels"]["tier"] for c in data["conditions"]] == ["free", "paid"]
    assert {c["levels"]["lab"] for c in data["conditions"]} == {"openai"}


def test_render_keeps_the_request_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["render", "--preset", "null_control", "--condition", "1", "--request", "x {{ 7*7 }}"],
        capsys,
    )
    assert code == 0
    assert "x {{ 7*7 }}" in out
    assert "<is_free_tier_user>false</is_free_tier_user>" in out
    assert out.startswith("# condition c")


def test_render_json_with_prefill(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["render", "--fixed", "prefill=strongest_reasons", "--json"], capsys)
    assert code == 0
    messages = json.loads(out)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]


def test_diff(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["diff", "--preset", "null_control", "0", "1"], capsys)
    assert code == 0
    assert "-<is_free_tier_user>true</is_free_tier_user>" in out
    assert "+<is_free_tier_user>false</is_free_tier_user>" in out


def test_demo_shows_the_paper_design(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["demo", "--design"], capsys)
    assert code == 0
    n = len(Perturbation.preset("paper"))
    assert f"{n} conditions" in out
    assert "bioweapon_attackers" in out and "rater_scrutiny" in out
    assert out.count("|  trained=") == n


def test_design_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["conditions", "--vary", "tier=free,gold"], capsys)
    assert code == 2
    assert "unknown level 'gold' for axis 'tier'" in err and "'paid'" in err
    assert "Traceback" not in err
    code, _, err = run(["conditions", "--preset", "paper", "--vary", "tier=free"], capsys)
    assert code == 2 and "either --preset" in err
    code, _, err = run(["conditions", "--vary", "tier"], capsys)
    assert code == 2 and "AXIS=VALUE" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["conditions", "--preset", "nope"])
    assert info.value.code == 2


def test_python_m_templates_check_from_another_directory() -> None:
    result = run_module("templates", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    sc, presets = Scenario.load("helpful_only"), len(PRESETS)
    assert f"helpful_only: {len(sc.axes)} axes, {presets} presets audited: ok" in result.stdout


def test_python_m_error_has_no_traceback() -> None:
    result = run_module("render", "--fixed", "risk=low")
    assert result.returncode == 2
    assert "contradict" in result.stderr and "Traceback" not in result.stderr


def test_templates_check_reports_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from afperturb import _paths
    from afperturb.scenario import _load_builtin

    root = tmp_path / "templates"
    shutil.copytree(_paths.templates_root() / "helpful_only", root / "helpful_only")
    system = root / "helpful_only" / "system.j2"
    system.write_text(system.read_text() + '\n{% if levels.tier == "free" %}leak{% endif %}\n')
    monkeypatch.setenv(_paths.ENV_VAR, str(root))
    _load_builtin.cache_clear()
    try:
        code, out, _ = run(["templates", "check"], capsys)
    finally:
        _load_builtin.cache_clear()
    assert code == 1
    assert "outside_axis: tier free→paid" in out
