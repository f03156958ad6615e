"""Issue 14: every bad input is an AfperturbError naming the bad value and what is allowed,
raised before any request is sent.

One row per mistake: the call, the error class, and words its message must contain. Every row
runs with two tripwires: a ``tripwire/...`` model (registered for the test, so experiment files
can name it) that counts generations, and ``httpx`` clients whose ``send`` counts and refuses.
A row passes only if neither was touched. CLI rows run ``afperturb`` in process with
``AFPERTURB_DEBUG=1`` so the error itself (not the printed line) reaches the test; each row
also checks the CLI would map it to exit 2 or 3 with a one-line message, never "internal".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from afperturb import cli, datasets
from afperturb.cli._core import EXIT_INTERNAL, _one_line, exit_code
from afperturb.cli._experiment import load_experiment
from afperturb.design import Perturbation
from afperturb.errors import AfperturbError, DesignError, StoreError
from afperturb.models import base
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Message, Request, SamplingParams
from afperturb.stats.power import sample_size_gap
from afperturb.sweep import estimate, sweep

#: Every generation or HTTP request a row caused (must stay empty).
SENT: list[str] = []


class Tripwire:
    """A model that records every generation it is asked for."""

    def __init__(self, name: str = "tripwire/model") -> None:
        self.name = name

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        SENT.append(f"generate {self.name}")
        return Completion(text="<OUTPUT><rejected/></OUTPUT>", model=self.name)

    def config(self) -> dict[str, Any]:
        return {"provider": "tripwire", "model": self.name}

    async def aclose(self) -> None:
        return None


@pytest.fixture(autouse=True)
def tripwires(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register ``tripwire/...`` and make every httpx send a recorded refusal."""

    def factory(model_name: str) -> Tripwire:
        return Tripwire(f"tripwire/{model_name}")

    async def async_send(self: httpx.AsyncClient, request: httpx.Request, **_: Any) -> Any:
        SENT.append(f"http {request.url}")
        raise AssertionError(f"a request was sent: {request.url}")

    def sync_send(self: httpx.Client, request: httpx.Request, **_: Any) -> Any:
        SENT.append(f"http {request.url}")
        raise AssertionError(f"a request was sent: {request.url}")

    monkeypatch.setitem(base._FACTORIES, "tripwire", factory)
    monkeypatch.setattr(httpx.AsyncClient, "send", async_send)
    monkeypatch.setattr(httpx.Client, "send", sync_send)
    monkeypatch.setenv("AFPERTURB_DEBUG", "1")  # cli.main re-raises the error itself
    monkeypatch.setenv("AFPERTURB_CACHE", "/nonexistent-afperturb-cache")
    SENT.clear()
    yield
    SENT.clear()


# ---------------------------------------------------------------------- building blocks


def design() -> Perturbation:
    return Perturbation(vary={"tier": ["free", "paid"]})


REQUESTS = datasets.synthetic(2)


def run_sweep(**options: Any) -> Any:
    """A sweep on the tripwire model with ``options`` (requests default to two synthetic)."""
    requests = options.pop("requests", REQUESTS)
    return sweep(design(), Tripwire(), requests, progress=False, **options)


def write(tmp: Path, name: str, data: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


#: An experiment that would run fine: the tripwire model, two synthetic requests.
GOOD = 'preset = "rater_sycophancy"\nrequests = 2\nstore = "runs.sqlite"\n'


def experiment(body: str) -> Callable[[Path], Any]:
    """``afperturb sweep FILE`` on an experiment file of ``body`` (written to the tmp dir)."""

    def call(tmp: Path) -> Any:
        return cli.main(["sweep", str(write(tmp, "exp.toml", body)), "--quiet"])

    return call


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Path], Any]
    error: type[AfperturbError]
    words: tuple[str, ...]


CASES = [
    # -- designs
    Case(
        "fixed-level-list",
        lambda tmp: Perturbation(fixed={"tier": ["free"]}),  # type: ignore[dict-item]
        DesignError,
        ("fixed['tier']", "['free']", "one level", "vary=", "valid levels", "'paid'"),
    ),
    Case(
        "perturbation-misspelled-keyword",
        lambda tmp: Perturbation(vry={"tier": ["free", "paid"]}),
        DesignError,
        ("'vry'", "did you mean 'vary'", "'fixed'"),
    ),
    Case(
        "vary-level-not-a-string",
        lambda tmp: Perturbation(vary={"tier": ["free", ["paid"]]}),  # type: ignore[list-item]
        DesignError,
        ("['paid']", "axis 'tier'", "valid levels"),
    ),
    # -- sweep options
    Case(
        "samples-0",
        lambda tmp: run_sweep(samples=0),
        DesignError,
        ("'samples'", "got 0", "greater than or equal to 1"),
    ),
    Case(
        "concurrency-negative",
        lambda tmp: run_sweep(concurrency=-1),
        DesignError,
        ("'concurrency'", "got -1", "greater than or equal to 1"),
    ),
    Case(
        "sweep-misspelled-keyword",
        lambda tmp: run_sweep(sampels=2),
        DesignError,
        ("'sampels'", "did you mean 'samples'", "valid sweep options"),
    ),
    Case(
        "estimate-misspelled-option",
        lambda tmp: estimate(design(), Tripwire(), REQUESTS, concurency=4),
        DesignError,
        ("'concurency'", "did you mean 'concurrency'", "valid sweep options"),
    ),
    Case(
        "rate-limit-zero",
        lambda tmp: run_sweep(rate_limit=(0, None)),
        DesignError,
        ("'rate_limit'", "(0, None)", "> 0 or None"),
    ),
    Case(
        "temperature-negative",
        lambda tmp: run_sweep(params=SamplingParams(temperature=-5)),
        DesignError,
        ("temperature", "got -5", "greater than or equal to 0"),
    ),
    Case(
        "params-misspelled-field",
        lambda tmp: SamplingParams(tempreature=0.5),  # type: ignore[call-arg]
        DesignError,
        ("'tempreature'", "did you mean 'temperature'", "'max_tokens'"),
    ),
    # -- requests
    Case(
        "requests-list-of-strings",
        lambda tmp: run_sweep(requests=["a string"]),
        DesignError,
        ("requests[0]", "'a string'", "(str)", "not a Request", "make_requests"),
    ),
    Case(
        "requests-one-string",
        lambda tmp: run_sweep(requests="a string"),
        DesignError,
        ("'a string'", "list of Request", "make_requests"),
    ),
    Case(
        "duplicate-request-ids",
        lambda tmp: run_sweep(requests=[REQUESTS[0], REQUESTS[1], REQUESTS[0]]),
        DesignError,
        ("duplicate request id", repr(REQUESTS[0].id), "requests[0]", "requests[2]"),
    ),
    # -- datasets
    Case(
        "csv-invalid-utf8",
        lambda tmp: datasets.from_csv(write(tmp, "bad.csv", b"text\nfine\ncaf\xe9 latin-1\n")),
        DesignError,
        ("bad.csv", "line 3", "column 4", "not valid UTF-8", "0xe9"),
    ),
    Case(
        "jsonl-invalid-utf8",
        lambda tmp: datasets.from_jsonl(
            write(tmp, "bad.jsonl", b'{"text": "a"}\n{"text": "\xff"}\n')
        ),
        DesignError,
        ("bad.jsonl", "line 2", "not valid UTF-8", "0xff"),
    ),
    Case(
        "experiment-csv-invalid-utf8",
        lambda tmp: (
            write(tmp, "reqs.csv", b"text\n\xff\n"),
            experiment(
                GOOD.replace("requests = 2", 'requests = "reqs.csv"') + 'models = ["tripwire/a"]\n'
            )(tmp),
        ),
        DesignError,
        ("reqs.csv", "line 2", "not valid UTF-8"),
    ),
    # -- experiment files: every model and judge is checked before the first sweep
    Case(
        "toml-model-table-typo",
        experiment(
            GOOD + 'models = ["tripwire/a", {name = "openai/gpt-4o", base_ur = "http://x"}]\n'
        ),
        DesignError,
        ("exp.toml", "'base_ur'", "did you mean 'base_url'", "valid openai model options"),
    ),
    Case(
        "toml-judge-model-typo",
        experiment(
            GOOD + 'models = ["tripwire/a"]\njudges = ["af_reasoning"]\n'
            'judge_model = {name = "openai/gpt-4o-mini", api_kye = "k"}\n'
        ),
        DesignError,
        ("'api_kye'", "did you mean 'api_key'"),
    ),
    Case(
        "toml-unknown-judge",
        experiment(
            GOOD + 'models = ["tripwire/a"]\njudges = ["af_reasonin"]\n'
            'judge_model = "tripwire/judge"\n'
        ),
        DesignError,
        ("exp.toml", "unknown judge 'af_reasonin'", "valid judges", "'af_reasoning'"),
    ),
    Case(
        "toml-judges-without-judge-model",
        experiment(GOOD + 'models = ["tripwire/a"]\njudges = ["af_reasoning"]\n'),
        DesignError,
        ("exp.toml", "['af_reasoning']", "judge_model"),
    ),
    Case(
        "toml-temperature-negative",
        experiment(GOOD + 'models = ["tripwire/a"]\n[params]\ntemperature = -5\n'),
        DesignError,
        ("exp.toml", "temperature", "got -5", "greater than or equal to 0"),
    ),
    Case(
        "toml-rate-limit-zero",
        experiment(GOOD + 'models = ["tripwire/a"]\nrate_limit = { rpm = 0 }\n'),
        DesignError,
        ("exp.toml", "rate_limit.rpm", "greater than 0", "got 0"),
    ),
    # -- stores: a folder that does not exist is an error, never created
    Case(
        "store-missing-directory",
        lambda tmp: run_sweep(store=tmp / "no" / "such" / "runs.sqlite"),
        StoreError,
        ("runs.sqlite", str(Path("no") / "such"), "does not exist"),
    ),
    Case(
        "toml-store-missing-directory",
        experiment(
            GOOD.replace('"runs.sqlite"', '"no/such/runs.sqlite"') + 'models = ["tripwire/a"]\n'
        ),
        StoreError,
        ("runs.sqlite", str(Path("no") / "such"), "does not exist"),
    ),
    # -- plan
    Case(
        "plan-gap-0",
        lambda tmp: cli.main(["plan", "--gap", "0", "--rate", "0.12"]),
        DesignError,
        ("gap", "non-zero", "got 0"),
    ),
    Case(
        "sample-size-gap-0",
        lambda tmp: sample_size_gap(0.12, 0.0),
        DesignError,
        ("gap", "non-zero", "got 0"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    with pytest.raises(AfperturbError) as info:
        case.call(tmp_path)
    error = info.value
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    message = str(error)
    missing = [w for w in case.words if w not in message]
    assert not missing, f"{missing} not in {message!r}"
    assert SENT == [], f"requests were sent before the error: {SENT}"
    assert exit_code(error) != EXIT_INTERNAL
    assert "\n" not in _one_line(error) and "internal error" not in _one_line(error)
    assert not (tmp_path / "no").exists(), "a store folder was created"


def test_store_override_in_missing_directory(tmp_path: Path) -> None:
    exp = write(tmp_path, "exp.toml", GOOD + 'models = ["tripwire/a"]\n')
    target = tmp_path / "no" / "such" / "runs.sqlite"
    with pytest.raises(StoreError, match="does not exist"):
        cli.main(["sweep", str(exp), "--store", str(target), "--quiet"])
    assert not (tmp_path / "no").exists()


def test_good_experiment_runs_on_the_tripwire(tmp_path: Path) -> None:
    """The rows' baseline file is valid: with nothing wrong the tripwire model is called."""
    assert experiment(GOOD + 'models = ["tripwire/a"]\n')(tmp_path) == 0
    assert SENT and all(s.startswith("generate tripwire/a") for s in SENT)
    assert load_experiment(tmp_path / "exp.toml").models[0].name == "tripwire/a"


# ---------------------------------------------------------------------- byte-order marks


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_files_with_a_bom_read_as_without(tmp_path: Path, suffix: str) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: the first column is still ``text``."""
    body = (
        'text,category\nhello,a\n"two\r\nlines",b\n'
        if suffix == ".csv"
        else '{"text": "hello", "category": "a"}\n{"text": "two\\r\\nlines", "category": "b"}\n'
    )
    plain = write(tmp_path, "plain" + suffix, body.encode())
    bom = write(tmp_path, "bom" + suffix, body.encode("utf-8-sig"))

    def load(path: Path) -> list[Request]:
        if suffix == ".csv":
            return datasets.from_csv(path, category_column="category")
        return datasets.from_jsonl(path, category_field="category")

    with_bom, without = load(bom), load(plain)
    assert [(r.text, r.category, r.metadata) for r in with_bom] == [
        (r.text, r.category, r.metadata) for r in without
    ]
    assert [r.text for r in with_bom] == ["hello", "two\r\nlines"]
