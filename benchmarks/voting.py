"""Sequential voting against fixed 20-vote voting on a realistic mix of transcripts.

1,000 simulated vote sequences: 80 % clear negatives (per-vote yes-probability 0.05), 10 % clear
positives (0.9), 10 % borderline (uniform between 0.2 and 0.6). Threshold 0.4 on 20 votes.
Reports, per mode, the disagreement with the fixed-vote label and the saving in votes.

Run: ``python benchmarks/voting.py [--seed 0] [--n 1000]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from afperturb.classify.voting import VotePolicy


@dataclass(frozen=True)
class ModeResult:
    mode: str
    maybe: float | None
    disagreement: float
    votes_mean: float
    saving: float
    requests_mean: float


def sequences(n: int, seed: int, votes: int = 20) -> np.ndarray:
    """An (n, votes) boolean array of votes drawn from the benchmark mix."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=[0.8, 0.1, 0.1])
    p = np.where(kind == 0, 0.05, np.where(kind == 1, 0.9, rng.uniform(0.2, 0.6, size=n)))
    return rng.random((n, votes)) < p[:, None]


def measure(
    policy: VotePolicy, seqs: np.ndarray, reference: VotePolicy | None = None
) -> ModeResult:
    """Disagreement with fixed voting and the vote saving, for one policy."""
    fixed = reference or VotePolicy(
        votes=policy.votes, threshold=policy.threshold, maybe=policy.maybe, mode="fixed"
    )
    disagree = used = requests = 0
    for row in seqs:
        votes = [bool(v) for v in row]
        out = policy.run(votes)
        disagree += out.label != fixed.run(votes).label
        used += out.votes_used
        requests += batched_requests(policy, votes)
    n = len(seqs)
    total = n * policy.votes
    return ModeResult(
        policy.mode, policy.maybe, disagree / n, used / n, 1 - used / total, requests / n
    )


def batched_requests(policy: VotePolicy, votes: list[bool]) -> int:
    """Requests needed when votes come ``next_request()`` at a time (n ≤ max_batch each)."""
    yes = total = requests = 0
    while (k := policy.next_request(yes, total)) > 0:
        yes += sum(votes[total : total + k])
        total += k
        requests += 1
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    seqs = sequences(args.n, args.seed)
    print(f"{args.n} sequences, seed {args.seed}, threshold 0.4, 20 votes")
    print(
        f"{'mode':<12} {'labels':<10} {'disagree':>9} {'votes/seq':>10} {'saving':>8}"
        f" {'requests/seq (n≤8)':>19}"
    )
    for maybe in (None, 0.2):
        for mode in ("fixed", "exact", "approximate"):
            r = measure(VotePolicy(threshold=0.4, maybe=maybe, mode=mode), seqs)
            labels = "binary" if maybe is None else "3-way"
            print(
                f"{r.mode:<12} {labels:<10} {r.disagreement:>9.1%} {r.votes_mean:>10.2f}"
                f" {r.saving:>8.1%} {r.requests_mean:>19.2f}"
            )


if __name__ == "__main__":
    main()
