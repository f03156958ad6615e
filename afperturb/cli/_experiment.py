"""Experiment files: one TOML file that says what ``afperturb sweep`` runs.

Relative paths (the store, a CSV/JSONL request file) are resolved against the file's folder, so
an experiment runs the same from any working directory. See docs/cli.md for the schema and
examples/experiment.toml for a file that runs offline.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from afperturb.design import PRESETS, Perturbation
from afperturb.errors import AfperturbError, DesignError, short_repr, unknown_choice
from afperturb.records import Request, SamplingParams
from afperturb.scenario import Scenario

__all__ = ["Experiment", "ModelSpec", "RequestSpec", "load_experiment"]

_DATASETS = ("synthetic", "advbench", "llm_lat")


class ModelSpec(BaseModel):
    """A model and the keyword arguments for :func:`afperturb.models.get` (``base_url`` ...)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str


class RequestSpec(BaseModel):
    """Where the requests come from: exactly one of ``synthetic``, ``dataset`` or ``path``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    synthetic: int | None = Field(default=None, ge=1)
    dataset: str | None = None
    path: str | None = None
    text: str = "text"
    category: str | None = None
    limit: int | None = Field(default=None, ge=1)
    seed: int = 0


class RateLimit(BaseModel):
    """Requests and tokens per minute (either may be left out)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)


class Experiment(BaseModel):
    """The validated contents of an experiment file (field names are the TOML keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str = "helpful_only"
    preset: str | None = None
    vary: dict[str, list[str]] = Field(default_factory=dict)
    fixed: dict[str, str] = Field(default_factory=dict)
    models: list[ModelSpec] = Field(min_length=1)
    requests: RequestSpec
    samples: int = Field(default=1, ge=1)
    seed: int = 0
    store: str = "runs.sqlite"
    concurrency: int = Field(default=64, ge=1)
    rate_limit: RateLimit | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    params: SamplingParams = Field(default_factory=SamplingParams)
    judges: list[str] = Field(default_factory=list)
    judge_model: ModelSpec | None = None
    #: Folder of the experiment file: relative paths are resolved against it.
    base_dir: Path = Path(".")

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str | dict) else value
        return [{"name": v} if isinstance(v, str) else v for v in items]

    @field_validator("judge_model", mode="before")
    @classmethod
    def _judge_model(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _judges_need_a_model(self) -> Experiment:
        if self.judges and self.judge_model is None:
            raise ValueError(
                f"judges {self.judges} need judge_model = 'provider/model' (the model that "
                "judges the transcripts)"
            )
        return self

    @field_validator("requests", mode="before")
    @classmethod
    def _requests(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("requests must be a number, a dataset name, a path or a table")
        if isinstance(value, int):
            return {"synthetic": value}
        if isinstance(value, str):
            return {"dataset": value} if value in _DATASETS[1:] else {"path": value}
        return value

    def perturbation(self) -> Perturbation:
        """The design: a preset, or ``vary``/``fixed`` axes."""
        if self.preset is not None:
            if self.vary or self.fixed:
                raise DesignError("an experiment uses either preset or vary/fixed, not both")
            if self.preset not in PRESETS:
                raise unknown_choice("preset", self.preset, PRESETS)
            return Perturbation.preset(self.preset, self.load_scenario())
        return Perturbation(self.load_scenario(), vary=self.vary, fixed=self.fixed)

    def load_scenario(self) -> Scenario:
        """The ``scenario`` key: a built-in name, a template folder or a prompt-file file.

        Paths are relative to the experiment file's folder (a prompt-file declaration is a
        ``.toml`` naming ``[scenario] system_file``).
        """
        return Scenario.from_spec(self.scenario, self.base_dir)

    def store_path(self) -> Path:
        """The store, relative to the experiment file's folder (whose folder must exist)."""
        from afperturb.sweep import check_store_path

        path = self.base_dir / self.store
        check_store_path(path)
        return path

    def check(self) -> None:
        """Everything that can be checked offline, so no mistake surfaces after the sweep.

        Builds the design, every model and the judge model (backends connect lazily, so this
        sends nothing) and loads every judge declaration. Raises the first problem as a
        DesignError (or ClassifierError) naming the value.
        """
        from afperturb.classify.judges import load_judge
        from afperturb.models.base import get

        self.perturbation()
        for spec in [*self.models, *([self.judge_model] if self.judge_model else [])]:
            get(spec.name, **dict(spec.model_extra or {}))
        for name in self.judges:
            load_judge(name)

    def load_requests(self) -> list[Request]:
        """The request set (downloads and caches AdvBench / LLM-LAT on first use)."""
        from afperturb import datasets

        spec = self.requests
        given = [k for k in ("synthetic", "dataset", "path") if getattr(spec, k) is not None]
        if len(given) != 1:
            raise DesignError(
                f"requests needs exactly one of synthetic, dataset, path; got {given or 'none'}"
            )
        if spec.synthetic is not None:
            return datasets.synthetic(spec.synthetic, seed=spec.seed)
        if spec.dataset is not None:
            if spec.dataset not in _DATASETS:
                raise unknown_choice("dataset", spec.dataset, _DATASETS)
            if spec.dataset == "synthetic":
                return datasets.synthetic(spec.limit or 100, seed=spec.seed)
            loader = datasets.advbench if spec.dataset == "advbench" else datasets.llm_lat
            return loader(limit=spec.limit)
        return self._from_file(Path(str(spec.path)))

    def _from_file(self, path: Path) -> list[Request]:
        from afperturb import datasets

        file = path if path.is_absolute() else self.base_dir / path
        if not file.is_file():
            raise DesignError(f"request file {str(file)!r} does not exist")
        spec = self.requests
        if file.suffix == ".csv":
            found = datasets.from_csv(file, spec.text, category_column=spec.category)
        elif file.suffix in (".jsonl", ".json"):
            found = datasets.from_jsonl(file, spec.text, category_field=spec.category)
        else:
            raise unknown_choice("request file type", file.suffix, [".csv", ".jsonl"])
        return found[: spec.limit] if spec.limit is not None else found


def load_experiment(path: Path) -> Experiment:
    """Read and validate an experiment file; every problem becomes one-line DesignError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DesignError(f"cannot read experiment file {str(path)!r}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DesignError(f"{path}: invalid TOML: {exc}") from exc
    if "base_dir" in data:
        raise DesignError(f"{path}: 'base_dir' is not an experiment key")
    try:
        experiment = Experiment.model_validate({**data, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: "
            + e["msg"].removeprefix("Value error, ")
            + (f" (got {short_repr(e['input'])})" if e["type"] not in _NO_INPUT else "")
            for e in exc.errors()
        )
        raise DesignError(f"{path}: {problems}") from exc
    except DesignError as exc:  # a record's own check (params = {temperature = -5})
        raise DesignError(f"{path}: {exc}") from exc
    try:
        experiment.check()
    except AfperturbError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    return experiment


#: pydantic error types whose ``input`` is the whole table, not the bad value.
_NO_INPUT = ("missing", "extra_forbidden", "model_type", "value_error")
