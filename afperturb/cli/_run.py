"""Commands that produce data: ``demo``, ``sweep`` (from an experiment file) and ``classify``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from afperturb.cli._core import EXIT_BACKEND, EXIT_CHECK_FAILED, EXIT_OK, command
from afperturb.cli._design import show_design_demo
from afperturb.cli._experiment import ModelSpec, load_experiment
from afperturb.errors import ClassifierError, DesignError, StoreError

__all__: list[str] = []

#: Inline classifiers that need no model (the CLI's offline ``classify`` choices).
HEURISTICS = ("tags", "heuristic_af", "heuristic_compliance", "heuristic_motive")


def _tty() -> bool:
    return sys.stderr.isatty()


def _say(args: argparse.Namespace, text: str) -> None:
    """Progress notes go to stderr (stdout stays the result), and --quiet silences them."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- demo

DEMO_EPILOG = """examples:
  afperturb demo                          # 5 paper-shaped models x 41 conditions x 400 requests
  afperturb demo --requests 50 --quiet    # a quick look
  afperturb demo --models sim/claude-3-opus-like sim/no-gap --store demo.sqlite
  afperturb demo --design                 # only print the paper preset's design

Then: afperturb report STORE --out report/ renders the figures and transcripts.
"""


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, default=400, metavar="N", help="requests per condition (400)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="sim/NAME models (default: the five shaped after the paper's Table 1)",
    )
    parser.add_argument("--store", type=Path, help="store path (default: a temporary dir)")
    parser.add_argument("--seed", type=int, default=0, help="sweep seed (0)")
    parser.add_argument(
        "--jobs", type=int, help="worker processes (default: one per CPU, at most one per model)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    parser.add_argument(
        "--design", action="store_true", help="print the paper preset's design and exit"
    )


@command(
    "demo",
    "run the paper's tests on 5 simulated models shaped after its Table 1; compare the symbols",
    _demo_args,
    DEMO_EPILOG,
)
def _demo(args: argparse.Namespace) -> int:
    if args.design:
        return show_design_demo(sys.stdout)
    from afperturb.demo import DEMO_MODELS, check_demo, format_demo, run_demo

    models = check_demo(args.models or list(DEMO_MODELS), args.requests, args.jobs)
    _say(args, f"demo: paper preset x {len(models)} model(s) x {args.requests} requests ...")
    jobs = args.jobs
    progress = not args.quiet and _tty() and jobs == 1

    def done(model: str, seconds: float) -> None:
        _say(args, f"  {model}: swept in {seconds:.1f} s")

    demo = run_demo(
        args.requests,
        models,
        args.store,
        args.seed,
        jobs=jobs,
        progress=progress,
        on_model_done=done,
    )
    print(format_demo(demo))
    return EXIT_OK if demo.all_hit else EXIT_CHECK_FAILED


# ---------------------------------------------------------------------- sweep

SWEEP_EPILOG = """examples:
  afperturb sweep examples/experiment.toml
  afperturb sweep experiment.toml --store /tmp/runs.sqlite --quiet
  afperturb sweep experiment.toml --estimate     # tokens and cost, sends nothing

The experiment file (TOML; schema in docs/cli.md):
  preset = "rater_sycophancy"          # or [vary] / [fixed] tables of axes
  models = ["sim/opus-like", "openai/gpt-4o"]
  requests = 100                       # synthetic N | "advbench" | "llm_lat" | "file.csv"
  samples = 1
  seed = 0
  store = "runs.sqlite"                # relative to the experiment file
  concurrency = 64
  rate_limit = { rpm = 500, tpm = 200000 }
  max_cost_usd = 5.0
  judges = ["af_reasoning"]            # LLM judges run after the sweep (need judge_model)
  judge_model = "openai/gpt-4o-mini"

Then: afperturb attribute STORE, afperturb report STORE --out report/.
"""


def _sweep_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", type=Path, help="the experiment file (.toml)")
    parser.add_argument("--store", type=Path, help="override the experiment's store path")
    parser.add_argument(
        "--estimate", action="store_true", help="print the token and cost estimate; send nothing"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes")


def _model(spec: ModelSpec) -> Any:
    from afperturb.models.base import get

    extra = dict(spec.model_extra or {})
    return get(spec.name, **extra)


@command(
    "sweep",
    "run an experiment file (design x models x requests) into a store",
    _sweep_args,
    SWEEP_EPILOG,
)
def _sweep(args: argparse.Namespace) -> int:
    from afperturb.sweep import estimate, sweep

    exp = load_experiment(args.experiment)
    design = exp.perturbation()
    requests = exp.load_requests()
    if not requests:
        raise DesignError(f"{args.experiment}: the request set is empty")
    store = args.store if args.store is not None else exp.store_path()
    rate = (exp.rate_limit.rpm, exp.rate_limit.tpm) if exp.rate_limit else None
    n_cond = len(design.conditions())
    _say(args, f"sweep: {design!r}; {len(requests)} requests x {exp.samples} sample(s)")
    for spec in exp.models:
        model = _model(spec)
        if args.estimate:
            est = estimate(design, model, requests, samples=exp.samples, params=exp.params)
            print(repr(est))
            continue
        result = sweep(
            design,
            model,
            requests,
            samples=exp.samples,
            seed=exp.seed,
            store=store,
            concurrency=exp.concurrency,
            rate_limit=rate,
            max_cost_usd=exp.max_cost_usd,
            progress=not args.quiet and _tty(),
            params=exp.params,
        )
        frame = result.to_frame()
        failed = int((frame["status"] == "failed").sum())
        info = result.run_info
        stop = f", stopped: {result.stopped_reason}" if result.stopped_reason else ""
        print(
            f"{spec.name}: {len(frame)} trials ({n_cond} conditions), {failed} failed, "
            f"{info.get('cached', 0)} cached, ${float(info.get('spent_usd', 0.0)):.4f}{stop}"
        )
    if args.estimate:
        return EXIT_OK
    if exp.judges:
        if exp.judge_model is None:
            raise DesignError(f"{args.experiment}: judges need judge_model = 'provider/model'")
        _judge(store, exp.judges, _model(exp.judge_model), concurrency=16)
    print(f"store: {store}")
    return EXIT_OK


# ---------------------------------------------------------------------- classify

CLASSIFY_EPILOG = """examples:
  afperturb classify runs.sqlite --judge heuristic_motive          # offline, no model
  afperturb classify runs.sqlite --judge af_reasoning --model openai/gpt-4o-mini
  afperturb classify runs.sqlite --judge strongreject --judge af_reasoning \\
      --model openai/llama-3-70b --base-url http://localhost:8000/v1 --votes 5

Labels already in the store for the same judge config are skipped (re-running is free).
"""


def _classify_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="the SQLite store of a sweep")
    parser.add_argument(
        "--judge",
        action="append",
        required=True,
        metavar="NAME",
        help="judge name or .toml path, or a heuristic: " + ", ".join(HEURISTICS),
    )
    parser.add_argument("--model", help="the judge model, provider/model (LLM judges)")
    parser.add_argument("--base-url", help="OpenAI-compatible server for --model")
    parser.add_argument("--votes", type=int, help="override the judge's vote count")
    parser.add_argument("--concurrency", type=int, default=16, help="trials judged at once")


def _open_store(path: Path) -> Any:
    from afperturb.store import Store

    if not path.is_file():
        raise StoreError(f"no store at {str(path)!r}")
    return Store.open(path, create=False, readonly=False)


def _heuristic(name: str) -> Any:
    from afperturb.classify import heuristics, tags

    found: dict[str, Any] = {
        "tags": tags.TagClassifier,
        "heuristic_af": heuristics.HeuristicAFClassifier,
        "heuristic_compliance": heuristics.HeuristicComplianceClassifier,
        "heuristic_motive": heuristics.HeuristicMotiveClassifier,
    }
    return found[name]()


def _label_inline(store: Any, classifier: Any) -> tuple[int, dict[str, int]]:
    """Label every completed trial as the sweep does: heuristics get the trial's request."""
    from afperturb.classify.base import labeller

    conditions = store.conditions()
    requests = store.requests()
    label_of = labeller(classifier)
    labels: list[Any] = []
    counts: dict[str, int] = {}
    for trial in store.trials(status="completed"):
        label = label_of(trial, conditions.get(trial.condition_id), requests.get(trial.request_id))
        counts[label.value] = counts.get(label.value, 0) + 1
        labels.append(label)
        if len(labels) >= 2048:
            store.put_labels(labels)
            labels = []
    store.put_labels(labels)
    return sum(counts.values()), counts


def _judge(path: Path, names: list[str], model: Any, *, concurrency: int, **opts: Any) -> bool:
    """Run the judges; False when some judge's every new label is an error."""
    from afperturb.classify.judges import load_judge, run
    from afperturb.results import SweepResult

    store = _open_store(path)
    ok = True
    try:
        result = SweepResult.load(store)
        for name in names:
            judge = load_judge(name, **opts)
            if model is None:
                raise ClassifierError(f"judge {name!r} needs --model provider/model")
            for done in run(result, judge.using(model), concurrency=concurrency):
                print(
                    f"{done.judge}: {done.labelled} labelled, {done.skipped} already labelled, "
                    f"{done.errors} errors, values {dict(sorted(done.value_counts.items()))}"
                )
                if done.errors:
                    kind, what = (
                        ("error", "every label")
                        if done.all_failed
                        else ("warning", f"{done.errors} labels")
                    )
                    print(
                        f"afperturb: {kind}: judge {done.judge!r}: {what} of {done.labelled} "
                        f"failed; first error: {done.first_error}",
                        file=sys.stderr,
                    )
                ok = ok and not done.all_failed
    finally:
        store.close()
    return ok


@command(
    "classify",
    "label a store's trials with a judge (LLM) or a heuristic (offline)",
    _classify_args,
    CLASSIFY_EPILOG,
)
def _classify(args: argparse.Namespace) -> int:
    heuristics = [n for n in args.judge if n in HEURISTICS]
    judges = [n for n in args.judge if n not in HEURISTICS]
    if heuristics:
        store = _open_store(args.store)
        try:
            for name in heuristics:
                n, counts = _label_inline(store, _heuristic(name))
                print(f"{name}: {n} labelled, values {dict(sorted(counts.items()))}")
        finally:
            store.close()
    if judges:
        if args.model is None:
            raise ClassifierError(f"LLM judge(s) {judges} need --model provider/model")
        from afperturb.models.base import get

        kwargs = {"base_url": args.base_url} if args.base_url else {}
        model = get(args.model, **kwargs)
        opts = {"votes": args.votes} if args.votes is not None else {}
        if not _judge(args.store, judges, model, concurrency=args.concurrency, **opts):
            return EXIT_BACKEND
    return EXIT_OK
