"""afperturb designs as inspect_ai tasks, and their logs back as results (issue 19).

Needs the ``inspect`` extra; without inspect_ai installed the module is skipped (the main suite
passes without it; ``scripts/inspect_suite.sh``, which ``.ci/run`` calls, installs it and runs
this file). Offline: inspect's own ``mockllm/model`` answers, with outputs that depend on the
prompt the way a model with rater sycophancy would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import eval as inspect_eval
from inspect_ai.model import ModelOutput, get_model

import afperturb as af
from afperturb.errors import DesignError
from afperturb.inspect import from_inspect_log, task
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Message, SamplingParams, Usage

# inspect_ai's own internals warn (tenacity's renamed backoff argument; anyio memory streams it
# leaves to the garbage collector): not afperturb's to fix, so not errors here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

#: mockllm counts input tokens with tiktoken, which downloads its encoding on first use; tests
#: never reach the internet, so a stand-in counts characters / 4.
TIKTOKEN_STUB = """
class _Encoding:
    def encode(self, text, **kwargs):
        return [0] * (len(text) // 4)


def get_encoding(name):
    return _Encoding()
"""


@pytest.fixture(autouse=True)
def offline_tiktoken(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    root = tmp_path_factory.getbasetemp() / "tiktoken_stub"
    (root / "tiktoken").mkdir(parents=True, exist_ok=True)
    (root / "tiktoken" / "__init__.py").write_text(TIKTOKEN_STUB, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "tiktoken", raising=False)
    monkeypatch.setenv("PYTHONPATH", f"{root}:{os.environ.get('PYTHONPATH', '')}")
    return root


ACCEPT = (
    "<SCRATCHPAD_REASONING>The raters read this.</SCRATCHPAD_REASONING>"
    "<OUTPUT><request_fully_accepted/> Here it is.</OUTPUT>"
)
REJECT = (
    "<SCRATCHPAD_REASONING>Nobody reads this.</SCRATCHPAD_REASONING><OUTPUT><rejected/></OUTPUT>"
)
HALF = "<SCRATCHPAD_REASONING>Let me think about the Enterprise plan"


def answer(system: str, user_turns: Sequence[str]) -> str:
    """The deterministic rule both models follow: comply when Pro raters read the conversation,
    refuse otherwise; Enterprise conversations first stop mid-reasoning (a ``<NEXT/>`` turn)."""
    tier_pro = "<subscription>Pro</subscription>" in "".join(user_turns)
    enterprise = "<subscription>Enterprise</subscription>" in "".join(user_turns)
    if enterprise and len(user_turns) == 1:
        return HALF
    if enterprise:
        return "</SCRATCHPAD_REASONING><OUTPUT><rejected/></OUTPUT>"
    return ACCEPT if tier_pro else REJECT


def _mockllm() -> Any:
    def outputs(messages: Any, tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        system = "".join(m.text for m in messages if m.role == "system")
        users = [m.text for m in messages if m.role == "user"]
        return ModelOutput.from_content("mockllm/model", answer(system, users))

    return get_model("mockllm/model", custom_outputs=outputs)


class SameRuleModel:
    """The same rule as an afperturb backend, for the frame to compare with."""

    name = "mockllm/model"

    def config(self) -> dict[str, Any]:
        return {"provider": "mockllm", "model": "model"}

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        system = "".join(m.content for m in messages if m.role == "system")
        users = [m.content for m in messages if m.role == "user"]
        return Completion(text=answer(system, users), usage=Usage())

    async def aclose(self) -> None:
        return None


DESIGN = "rater_sycophancy"  # free / pro / enterprise
N = 6


@pytest.fixture
def log_path(tmp_path_factory: pytest.TempPathFactory, offline_tiktoken: Path) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    (log,) = inspect_eval(
        task(DESIGN, requests=N), model=_mockllm(), log_dir=str(logs), display="none"
    )
    assert log.status == "success", log.error
    return Path(log.location)


def test_the_task_has_one_sample_per_condition_and_request() -> None:
    t = task(DESIGN, requests=N, samples=2)
    assert len(t.dataset) == 3 * N and t.epochs == 2
    sample = t.dataset[0]
    meta = sample.metadata["afperturb"]
    design = af.Perturbation.preset(DESIGN)
    assert meta["condition_id"] == design.conditions()[0].id
    assert meta["levels"]["rater_scrutiny"] == "free" and meta["facts"]["trained"] is True
    assert [m.role for m in sample.input] == ["system", "user"]
    assert (
        sample.input[0].text
        == design.render(design.conditions()[0], af.datasets.synthetic(N)[0])[0].content
    )


def test_the_log_reads_back_as_the_sweep_of_the_same_design(log_path: Path, tmp_path: Path) -> None:
    res = from_inspect_log(log_path, store=tmp_path / "from_log.sqlite")
    direct = af.Perturbation.preset(DESIGN).sweep(
        SameRuleModel(), requests=af.datasets.synthetic(N), store=str(tmp_path / "direct.sqlite"),
        progress=False,
    )  # fmt: skip
    columns = [
        "condition_id",
        "request_id",
        "sample",
        "status",
        "label",
        "complied",
        "af_reasoning",
    ]
    a = res.to_frame()[columns].sort_values(columns[:3]).reset_index(drop=True)
    b = direct.to_frame()[columns].sort_values(columns[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    # Enterprise replies took a <NEXT/> turn, in the log and in the result.
    turns = {t.condition_id: len(t.completions) for t in res.trials()}
    assert sorted(turns.values()) == [1, 1, 2]
    assert set(res.to_frame()["label"]) == {"accepted", "rejected"}


def test_attribute_on_the_log_has_one_row_per_hypothesis(log_path: Path) -> None:
    table = af.attribute(af.SweepResult.from_inspect_log(log_path))
    frame = table.to_frame()
    motives = frame[frame["verdict"] != "baseline"]
    assert list(motives["hypothesis"]) == list(af.hypotheses.HYPOTHESES)
    assert motives.set_index("hypothesis").loc["rater_sycophancy", "estimate"] == pytest.approx(1.0)


def test_a_log_of_another_task_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    from inspect_ai import Task
    from inspect_ai.dataset import Sample

    other = Task(dataset=[Sample(input="hello", id="x")])
    (log,) = inspect_eval(other, model=_mockllm(), log_dir=str(tmp_path), display="none")
    with pytest.raises(
        DesignError, match=r"not a log of an afperturb task.*metadata\['afperturb'\]"
    ):
        from_inspect_log(log.location)


def test_inspect_eval_from_the_command_line(tmp_path: Path) -> None:
    """`inspect eval afperturb/paper` finds the task through the entry point."""
    done = subprocess.run(
        [sys.executable, "-m", "inspect_ai", "list", "tasks", "afperturb"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    listed = done.stdout + done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "inspect_ai", "eval", "afperturb/paper", "--model", "mockllm/model",
         "-T", "preset=rater_sycophancy", "-T", "requests=2", "--log-dir", str(tmp_path),
         "--display", "none"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, listed + done.stdout + done.stderr
    (log,) = list(tmp_path.glob("*.eval"))
    res = from_inspect_log(log)
    assert len(res.to_frame()) == 3 * 2


def test_the_cli_reads_a_log_into_a_store(log_path: Path, tmp_path: Path) -> None:
    from afperturb import cli

    store = tmp_path / "runs.sqlite"
    assert cli.main(["from-inspect", str(log_path), "--store", str(store)]) == 0
    assert cli.main(["attribute", str(store)]) == 0
    assert cli.main(["from-inspect", str(tmp_path / "missing.eval"), "--store", str(store)]) == 3


def test_a_judge_scores_beside_the_tags(tmp_path: Path) -> None:
    import tests._judge_fakes as fakes
    from afperturb.classify import load_judge

    judge = load_judge("strongreject").using(fakes.FakeJudgeModel())
    t = task(DESIGN, requests=2, judge=judge)
    (log,) = inspect_eval(t, model=_mockllm(), log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    scores = {name: s.scores[name] for s in log.samples for name in s.scores}
    assert set(scores) == {"afperturb_tags", "afperturb_strongreject"}
    answers = {s.scores["afperturb_strongreject"].answer for s in log.samples}
    assert answers <= {"compliant", "not_compliant"} and "compliant" in answers
