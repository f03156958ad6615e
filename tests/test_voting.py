"""Sequential voting: exact mode never changes a label, approximate mode saves more."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from afperturb.classify.voting import VotePolicy
from afperturb.errors import DesignError


def _load_benchmark() -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "voting.py"
    spec = importlib.util.spec_from_file_location("_bench_voting", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_counts_from_the_issue() -> None:
    p = VotePolicy(votes=20, threshold=0.4, maybe=None, mode="exact")
    assert p.positive_count == 8
    assert p.decide(8, 8) == "positive"  # 8 yes already reach 0.4
    assert p.decide(7, 19) is None
    assert p.decide(0, 13) == "negative"  # 13 no make 8 yes unreachable
    assert p.decide(0, 12) is None
    assert p.run([False] * 20).votes_used == 13
    assert p.run([True] * 20).votes_used == 8


def test_three_way_exact_counts() -> None:
    p = VotePolicy(votes=20, threshold=0.4, maybe=0.2, mode="exact")
    assert (p.positive_count, p.maybe_count) == (8, 4)
    assert p.decide(0, 16) is None and p.decide(0, 17) == "negative"
    assert p.decide(4, 17) == "maybe"  # 4 yes reach maybe and 13 no make 8 yes unreachable
    assert p.decide(4, 16) is None


@pytest.mark.parametrize("maybe", [None, 0.2])
def test_exact_equals_fixed_on_every_sequence_of_12(maybe: float | None) -> None:
    # Exhaustive over all 2^12 sequences of a 12-vote design.
    exact = VotePolicy(votes=12, threshold=0.4, maybe=maybe, mode="exact")
    fixed = VotePolicy(votes=12, threshold=0.4, maybe=maybe, mode="fixed")
    used = 0
    for seq in itertools.product([False, True], repeat=12):
        out = exact.run(seq)
        assert out.label == fixed.run(seq).label
        used += out.votes_used
    assert used < 12 * 2**12


def test_fixed_uses_every_vote_and_labels_by_fraction() -> None:
    p = VotePolicy(mode="fixed")
    out = p.run([True] * 7 + [False] * 13)
    assert (out.label, out.votes_used, out.fraction) == ("maybe", 20, 0.35)
    assert p.label(8) == "positive" and p.label(3) == "negative"
    assert repr(out) == "<VoteOutcome maybe 7/20 of 20>"


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_next_request_never_wastes_votes(mode: str) -> None:
    # Asking next_request() votes at a time uses exactly the one-at-a-time vote count.
    p = VotePolicy(votes=20, threshold=0.4, maybe=None, mode=mode, max_batch=8)  # type: ignore[arg-type]
    for seq in ([False] * 20, [True] * 20, [True, False] * 10, [False] * 10 + [True] * 10):
        yes = total = 0
        requests = 0
        while (k := p.next_request(yes, total)) > 0:
            assert k <= 8
            yes += sum(seq[total : total + k])
            total += k
            requests += 1
        assert total == p.run(seq).votes_used
        assert requests <= total
    assert p.next_request(0, 0) >= 1


def test_exact_first_request_is_the_minimum_to_decide() -> None:
    p = VotePolicy(votes=20, threshold=0.4, maybe=None, mode="exact", max_batch=20)
    assert p.next_request(0, 0) == 8  # nothing can settle before 8 votes
    assert p.next_request(2, 8) == 6  # 8 yes need 6 more; 13 no need 7


def test_bad_policies_name_the_value() -> None:
    with pytest.raises(DesignError, match="'sometimes'"):
        VotePolicy(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maybe"):
        VotePolicy(threshold=0.4, maybe=0.5)
    with pytest.raises(ValueError, match="error"):
        VotePolicy(mode="approximate", error=0.0)


def test_benchmark_numbers_seeded() -> None:
    bench = _load_benchmark()
    seqs = bench.sequences(1000, seed=0)
    exact = bench.measure(VotePolicy(threshold=0.4, maybe=None, mode="exact"), seqs)
    approx = bench.measure(VotePolicy(threshold=0.4, maybe=None, mode="approximate"), seqs)
    # The issue's bars: exact identical with ≥ 30 % fewer votes; approximate ≤ 1 % with ≥ 55 %.
    assert exact.disagreement == 0.0 and exact.saving >= 0.30
    assert approx.disagreement <= 0.01 and approx.saving >= 0.55
    # The numbers recorded in docs/classifiers.md (seed 0).
    assert round(exact.saving, 3) == 0.331
    assert (round(approx.disagreement, 3), round(approx.saving, 3)) == (0.004, 0.626)
