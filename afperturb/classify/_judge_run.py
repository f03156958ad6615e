"""Running judges: votes through a model backend, cached, retried, sequential; re-judging stores.

:class:`JudgeClassifier` binds a :class:`~afperturb.classify.judges.Judge` to a model. For one
trial it renders the prompt, asks for votes in requests of at most ``max_n`` (``n`` votes per
request, falling back to single requests when a backend returns fewer choices or rejects ``n``),
drops ``temperature`` once if the backend rejects it, retries what
:func:`~afperturb.models.base.is_retryable` says to retry, and stops when the vote policy says
the label is settled. Every request goes through the store's completion cache when a store is
given, keyed like the sweep's cache (model config, messages, params, vote offset), so judging
the same transcripts again sends nothing. An answer that cannot be parsed is recorded on the
label (``details["errors"]``) and does not count as a vote; a trial whose judge fails entirely
gets the label value ``error`` with the reason (``details["error"]``) and the column the judge
sets (``details["sets"]``), and the rest of the run carries on. Nothing stands in for a failed
judge: ``SweepResult.to_frame()`` shows the failure in that column's ``*_error`` companion.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from afperturb.classify.base import stamp
from afperturb.classify.judges import Judge, Vote
from afperturb.errors import AfperturbError, BackendError, ClassifierError
from afperturb.models.base import Model, is_retryable
from afperturb.records import Condition, Label, Message, Request, SamplingParams, Trial

Sleep = Callable[[float], Awaitable[None]]
#: A 400 that names the ``n`` parameter (or choices): the backend will not take several votes.
_N_REJECTED = re.compile(r"(?<![a-z0-9_\\])['\"]?n['\"]?(?![a-z0-9_])|choices")


@dataclass
class _Counters:
    requests: int = 0
    cached: int = 0
    votes: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class JudgeClassifier:
    """A judge bound to a model backend (and optionally a store's completion cache).

    Args:
        judge: The judge declaration.
        model: Any backend with ``generate``.
        store: An :class:`afperturb.store.Store` for the completion cache, or None.
        max_retries: Retries of a retryable backend error per request.
        sleep: Injected sleep (tests pass a no-op); backoff is exponential with full jitter.
        seed: Seed of the backoff jitter.
    """

    def __init__(
        self,
        judge: Judge,
        model: Model,
        *,
        store: Any | None = None,
        max_retries: int = 4,
        sleep: Sleep = asyncio.sleep,
        seed: int = 0,
    ) -> None:
        self.judge = judge
        self.model = model
        self.store = store
        self.max_retries = max_retries
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._temperature = judge.temperature is not None
        self._use_n = True
        self.counters = _Counters()
        self._model_config = model.config()
        self.config_hash = judge.config_hash(self._model_config)
        self._model_hash: str | None = None
        #: Answers asked for and not yet readable from the store, by cache key.
        self._inflight: dict[str, asyncio.Future[list[str] | None]] = {}

    @property
    def name(self) -> str:
        """The judge's name (labels are stored under it)."""
        return self.judge.name

    def __repr__(self) -> str:
        return f"<JudgeClassifier {self.judge.name} on {self.model.name}>"

    # --- one request ---------------------------------------------------------------------------

    async def _generate(
        self, messages: Sequence[Message], params: SamplingParams, offset: int, key: str
    ) -> list[str]:
        for attempt in range(self.max_retries + 1):
            try:
                completion = await self.model.generate(messages, params)
            except BackendError as exc:
                if not is_retryable(exc) or attempt == self.max_retries:
                    raise
                retry_after = getattr(exc, "retry_after", None)
                delay = (
                    retry_after
                    if retry_after is not None
                    else self._rng.uniform(0, 0.5 * 2**attempt)
                )
                await self._sleep(delay)
                continue
            self.counters.requests += 1
            self.counters.input_tokens += completion.usage.input_tokens
            self.counters.output_tokens += completion.usage.output_tokens
            self._cache_put(key, messages, params, offset, completion)
            return [completion.text, *completion.alternatives]
        raise AssertionError("unreachable")  # pragma: no cover

    def _key(self, messages: Sequence[Message], params: SamplingParams, offset: int) -> str:
        from afperturb.store import cache_key, model_hash

        if self._model_hash is None:
            self._model_hash = model_hash(self._model_config)
        return cache_key(self._model_hash, messages, params, offset)

    def _cache_get(self, key: str) -> list[str] | None:
        if self.store is None:
            return None
        hit = self.store.get_completion(key)
        if hit is None:
            return None
        self.counters.cached += 1
        return [hit.text, *hit.alternatives]

    def _cache_put(
        self,
        key: str,
        messages: Sequence[Message],
        params: SamplingParams,
        offset: int,
        completion: Any,
    ) -> None:
        if self.store is None:
            self._inflight.pop(key, None)
            return
        durable = self.store.put_completion(
            key, self._model_hash, messages, params, offset, completion
        )
        # Twins keep reading the answer from memory until the cache can serve it.
        loop = asyncio.get_running_loop()

        def forget(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._inflight.pop, key, None)

        durable.add_done_callback(forget)

    async def _ask_once(self, messages: Sequence[Message], n: int, offset: int) -> list[str]:
        """One request of ``n`` votes at vote offset ``offset``, via the cache.

        Identical requests (two trials with the same transcript) are asked once: a twin that
        arrives while the first is in flight, or before its answer is in the store, waits
        for that answer instead of paying for it again.
        """
        params = self.judge.params(n, temperature=self._temperature)
        key = self._key(messages, params, offset)
        cached = self._cache_get(key)
        if cached is not None:
            return cached
        twin = self._inflight.get(key)
        if twin is not None:
            shared = await asyncio.shield(twin)  # our cancellation is not the first's
            if shared is not None:
                self.counters.cached += 1
                return list(shared)
            # The first asker failed: ask ourselves (and meet its error or our own answer).
        answer: asyncio.Future[list[str] | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = answer
        try:
            texts = await self._generate(messages, params, offset, key)
        except BaseException as exc:
            self._inflight.pop(key, None)
            if not answer.done():
                answer.set_result(None)
            if not isinstance(exc, BackendError):
                raise
            text = str(exc).lower()
            if exc.status_code == 400 and self._temperature and "temperature" in text:
                self._temperature = False  # a reasoning model: never send it again
                return await self._ask_once(messages, n, offset)
            if exc.status_code == 400 and n > 1 and self._use_n and _N_REJECTED.search(text):
                self._use_n = False  # the backend rejects n: one vote per request from now on
                return await self._ask(messages, n, offset)
            raise
        if not answer.done():
            answer.set_result(texts)
        return texts

    async def _ask(self, messages: Sequence[Message], k: int, offset: int) -> list[str]:
        """``k`` votes starting at ``offset``: n per request where allowed, else one by one."""
        if self._use_n and k > 1:
            texts = await self._ask_once(messages, k, offset)
            texts = texts[:k]
            if len(texts) < k:  # the backend ignored or capped n: fetch the rest singly
                rest = await self._ask(messages, k - len(texts), offset + len(texts))
                texts.extend(rest)
            return texts
        singles = [self._ask_once(messages, 1, offset + i) for i in range(k)]
        return [texts[0] for texts in await asyncio.gather(*singles)]

    # --- one trial -----------------------------------------------------------------------------

    async def alabel(
        self, trial: Trial, condition: Condition | None = None, request: Request | None = None
    ) -> Label:
        """Judge one trial; backend and parse failures end up on the label, never raised."""
        base = trial.key
        try:
            messages = self.judge.render(trial, request)
        except ClassifierError as exc:
            return self._make(base, value="error", details={"error": str(exc)})
        if messages is None:
            return self._make(base, value="nothing_to_read", details={"reads": self.judge.reads})
        try:
            votes, asked, errors = await self._vote(messages)
        except AfperturbError as exc:
            return self._make(
                base, value="error", details={"error": f"{type(exc).__name__}: {exc}"}
            )
        note = self.judge.format_note(trial, request)
        if not votes:
            return self._make(
                base,
                value="error",
                details={"error": "no parseable vote", "errors": errors[:5], **note},
            )
        label = self._label(base, votes, asked, errors)
        if note:
            label = label.model_copy(update={"details": {**label.details, **note}})
        return label

    async def _vote(self, messages: Sequence[Message]) -> tuple[list[Vote], int, list[str]]:
        policy = self.judge.policy()
        votes: list[Vote] = []
        errors: list[str] = []
        yes = asked = 0
        bad_budget = max(2, self.judge.votes // 2)
        while len(errors) <= bad_budget:
            k = policy.next_request(yes, len(votes))
            if k == 0:
                break
            texts = await self._ask(messages, k, asked)
            asked += len(texts)
            for text in texts:
                try:
                    vote = self.judge.parse(text)
                except ClassifierError as exc:
                    errors.append(str(exc))
                    continue
                votes.append(vote)
                yes += vote.yes
        self.counters.votes += asked
        return votes, asked, errors

    def _make(self, trial_key: str, value: str, **fields: Any) -> Label:
        if value == "error" and self.judge.sets is not None:
            # A failure names the column it would have set, so the results table can show
            # the failure there instead of a lower-preference classifier's verdict.
            fields["details"] = {**fields.get("details", {}), "sets": self.judge.sets}
        return Label(
            trial_key=trial_key,
            classifier=self.name,
            config_hash=self.config_hash,
            value=value,
            **fields,
        )

    def _label(self, base: str, votes: list[Vote], asked: int, errors: list[str]) -> Label:
        judge = self.judge
        policy = judge.policy()
        yes = sum(v.yes for v in votes)
        details: dict[str, Any] = {
            "votes": len(votes),
            "votes_asked": asked,
            "yes": yes,
            "criteria": _criteria_summary(judge, votes),
        }
        evidence = _evidence(judge, votes)
        if evidence:
            details["evidence"] = evidence
        if errors:
            details["errors"] = errors[:5]
            details["error_count"] = len(errors)
        if judge.combine == "categories":
            return self._categories(base, details)
        verdict = policy.decide(yes, len(votes)) or policy.label(yes, len(votes))
        positive, maybe, negative = judge.labels
        value = {"positive": positive, "maybe": maybe, "negative": negative}[verdict]
        scores = [v.score for v in votes if v.score is not None]
        score = sum(scores) / len(scores) if scores else yes / len(votes)
        flag = verdict == "positive"
        return self._make(
            base,
            value=value,
            score=score,
            complied=flag if judge.sets == "complied" else None,
            af_reasoning=flag if judge.sets == "af_reasoning" else None,
            details=details,
        )

    def _categories(self, base: str, details: dict[str, Any]) -> Label:
        fractions = {k: v for k, v in details["criteria"].items() if isinstance(v, float)}
        best = max(fractions, key=lambda k: fractions[k]) if fractions else None
        value = best if best is not None and fractions[best] >= self.judge.threshold else "none"
        return self._make(base, value=value, score=fractions.get(value), details=details)


def _criteria_summary(judge: Judge, votes: list[Vote]) -> dict[str, float]:
    """Per criterion: yes-fraction (yes_no) or mean (scale) over the votes that answered it."""
    out: dict[str, float] = {}
    for c in judge.criteria:
        if c.kind == "text":
            continue
        values = [v.answers[c.name] for v in votes if c.name in v.answers]
        if values:
            out[c.name] = sum(float(x) for x in values) / len(values)
    return out


def _evidence(judge: Judge, votes: list[Vote]) -> dict[str, list[str]]:
    """Quoted evidence per criterion (``<criterion>_quote`` text tags), up to three distinct."""
    out: dict[str, list[str]] = {}
    for c in judge.criteria:
        if c.kind != "text":
            continue
        target = c.name.removesuffix("_quote")
        quotes: list[str] = []
        for v in votes:
            quote = v.answers.get(c.name)
            if not isinstance(quote, str) or not quote or quote.lower() in ("none", "n/a"):
                continue
            if v.answers.get(target) is False:
                continue  # evidence for a "no" is not evidence
            if quote not in quotes:
                quotes.append(quote)
        if quotes:
            out[target] = quotes[:3]
    return out


# --- re-judging a stored sweep ---------------------------------------------------------------


@dataclass(frozen=True)
class JudgeRun:
    """What one judge did over a set of trials.

    Attributes:
        judge: The judge's name.
        config_hash: Its config hash (labels are stored under it).
        labelled: Trials labelled in this run.
        skipped: Trials that already had a label with this config hash.
        errors: Trials whose label is ``error``.
        requests: Requests sent to the model (cache hits excluded).
        cached: Requests answered from the completion cache.
        votes: Votes received (sequential voting stops early).
        input_tokens: Prompt tokens of the requests sent.
        output_tokens: Completion tokens of the requests sent.
        first_error: The message of the first ``error`` label of this run ("" when none), so
            a run whose every label failed can say why.
    """

    judge: str
    config_hash: str
    labelled: int
    skipped: int
    errors: int
    requests: int
    cached: int
    votes: int
    input_tokens: int
    output_tokens: int
    value_counts: dict[str, int] = field(default_factory=dict)
    first_error: str = ""

    @property
    def all_failed(self) -> bool:
        """Every trial labelled in this run got ``error`` (none labelled: False)."""
        return self.labelled > 0 and self.errors == self.labelled

    def __repr__(self) -> str:
        return (
            f"<JudgeRun {self.judge}: {self.labelled} labelled, {self.skipped} skipped, "
            f"{self.errors} errors, {self.requests} requests ({self.cached} cached)>"
        )

    def to_frame(self) -> pd.DataFrame:
        """One row, one column per field (value counts as ``n_<value>``)."""
        row = {k: v for k, v in self.__dict__.items() if k not in ("value_counts", "first_error")}
        row.update({f"n_{k}": v for k, v in sorted(self.value_counts.items())})
        return pd.DataFrame([row])

    def to_markdown(self) -> str:
        """The row as a markdown table."""
        frame = self.to_frame()
        head = "| " + " | ".join(frame.columns) + " |"
        rule = "|" + "---|" * len(frame.columns)
        body = "| " + " | ".join(str(v) for v in frame.iloc[0].tolist()) + " |"
        return "\n".join([head, rule, body])

    def _repr_html_(self) -> str:
        return self.to_frame().to_html(index=False)


def _bind(judges: Any, store: Any, options: dict[str, Any]) -> list[JudgeClassifier]:
    items = [judges] if isinstance(judges, JudgeClassifier | Judge) else list(judges)
    bound: list[JudgeClassifier] = []
    for item in items:
        if isinstance(item, JudgeClassifier):
            if item.store is None:
                item.store = store
            bound.append(item)
        elif isinstance(item, Judge):
            model = options.get("model")
            if model is None:
                raise ClassifierError(
                    f"judge {item.name!r} has no model: pass judge.using(model) or model="
                )
            extra = {k: v for k, v in options.items() if k != "model"}
            bound.append(JudgeClassifier(item, model, store=store, **extra))
        else:
            raise ClassifierError(f"not a judge: {item!r}; pass Judge.using(model) objects")
    return bound


def _source(result: Any) -> tuple[Iterable[Trial], dict[str, Condition], dict[str, Request], Any]:
    """Trials, conditions, requests and store from a SweepResult, a Store or a list of trials."""
    store = result if hasattr(result, "put_labels") else getattr(result, "store", None)
    trials_of = getattr(result, "trials", None)
    trials: Iterable[Trial] = trials_of() if callable(trials_of) else list(result)
    conds = getattr(result, "conditions", None)
    conditions = dict((conds() if callable(conds) else conds) or {})
    if store is not None and not conditions:
        conditions = store.conditions()
    requests = store.requests() if store is not None else {}
    return trials, conditions, requests, store


async def run_async(
    result: Any,
    judges: Any,
    *,
    concurrency: int = 16,
    store: Any | None = None,
    **options: Any,
) -> list[JudgeRun]:
    """Judge every completed trial of ``result`` that has no label from this judge config yet.

    Args:
        result: A ``SweepResult`` (its store is used), a ``Store``, or an iterable of trials.
        judges: A bound judge (``judge.using(model)``), a :class:`Judge` with ``model=``, or a
            list of either.
        concurrency: Trials judged at once.
        store: Overrides the result's store (cache and label destination).
        **options: ``model=`` for unbound judges; other :class:`JudgeClassifier` options.

    Returns:
        One :class:`JudgeRun` per judge; the labels are in the store (and the run's counters).
    """
    if not callable(getattr(result, "trials", None)):
        result = list(result)  # a one-shot iterable of trials: read it once
    _, conditions, requests, own_store = _source(result)
    store = store if store is not None else own_store
    bound = _bind(judges, store, options)
    runs = []
    for jc in bound:
        trials = _source(result)[0]  # streamed afresh per judge: never all trials in memory
        runs.append(await _run_one(jc, trials, conditions, requests, store, concurrency))
    return runs


async def _run_one(
    jc: JudgeClassifier,
    trials: Iterable[Trial],
    conditions: dict[str, Condition],
    requests: dict[str, Request],
    store: Any | None,
    concurrency: int,
) -> JudgeRun:
    # Trials this config has already labelled, with the transcript each label read ("" for
    # labels stored before transcripts were recorded): a changed transcript is re-judged.
    done: dict[str, str] = {}
    if store is not None:
        done = {
            lab.trial_key: lab.transcript
            for lab in store.labels(classifier=jc.name)
            # A failure, or a trial with nothing to read, is looked at again: free while
            # there is still nothing to read, and labelled once the judge can read it (replies
            # that ignored the tags were nothing_to_read before the judges read their text).
            if lab.config_hash == jc.config_hash and lab.value not in ("error", "nothing_to_read")
        }
    before = dict(jc.counters.__dict__)
    counts: dict[str, int] = {}
    skipped = 0
    unsaved: list[Label] = []
    first_error: list[str] = []

    def save() -> None:
        if store is not None and unsaved:
            store.put_labels(list(unsaved))
        unsaved.clear()

    def pending() -> Iterator[Trial]:
        nonlocal skipped
        for trial in trials:
            if trial.status != "completed":
                continue
            read = done.get(trial.key)
            if read is not None and read in ("", trial.transcript):
                skipped += 1
                continue
            yield trial

    work = pending()

    async def worker() -> None:
        # A bounded pool pulling from one iterator: memory does not grow with the run.
        for trial in work:
            label = stamp(
                await jc.alabel(
                    trial, conditions.get(trial.condition_id), requests.get(trial.request_id)
                ),
                trial,
            )
            counts[label.value] = counts.get(label.value, 0) + 1
            if label.value == "error" and not first_error:
                first_error.append(str(label.details.get("error", "")))
            unsaved.append(label)
            if len(unsaved) >= 256:
                save()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    save()
    after = jc.counters.__dict__
    return JudgeRun(
        judge=jc.name,
        config_hash=jc.config_hash,
        labelled=sum(counts.values()),
        skipped=skipped,
        errors=counts.get("error", 0),
        requests=after["requests"] - before["requests"],
        cached=after["cached"] - before["cached"],
        votes=after["votes"] - before["votes"],
        input_tokens=after["input_tokens"] - before["input_tokens"],
        output_tokens=after["output_tokens"] - before["output_tokens"],
        value_counts=counts,
        first_error=first_error[0] if first_error else "",
    )


def run(result: Any, judges: Any, **options: Any) -> list[JudgeRun]:
    """Synchronous :func:`run_async`; inside a running event loop it uses a fresh thread."""
    coro = run_async(result, judges, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="afperturb-judge") as ex:
        return ex.submit(asyncio.run, coro).result()


__all__ = ["JudgeClassifier", "JudgeRun", "run", "run_async"]
