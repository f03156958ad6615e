"""Validate afperturb.stats and attribute() by simulation (results go in docs/validation.md).

Checks, each against a ground truth planted in the vectorised frame generator
(afperturb.stats.simulate: the real presets' conditions, the truth of afperturb.profiles that the
simulated backends share):

1. coverage of the 95 % CI of the paired gap (request_sd = 1.0), n = 100 and 400;
2. false-positive rate of "supported" under a null model (request_sd = 1.0);
3. recovery of the expected verdicts (MotivationProfile.expected_verdicts()) against n for
   every built-in profile: power curves, false positives, the conflicting TGG cells;
4. analytic vs simulated power of the paired gap test.

Usage: python benchmarks/validate_stats.py [--replicates 1000] [--attr-replicates 100]
Default run: about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss

from afperturb.hypotheses import HYPOTHESES, attribute
from afperturb.profiles import PROFILES, MotivationProfile
from afperturb.stats import (
    compliance_gap,
    power_gap,
    simulate_frame,
    simulated_power,
    wilson_interval,
)
from afperturb.stats._frame import ArmSpec
from afperturb.stats.gaps import Method

NODES, WEIGHTS = hermegauss(80)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def expit(x: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-x)))


def truth(logit_t: float, logit_c: float, sd: float) -> tuple[float, float, float]:
    """True marginal rates and the within-request correlation of the two arms' outcomes."""
    pt, pc = expit(logit_t + sd * NODES), expit(logit_c + sd * NODES)
    mt, mc = float(WEIGHTS @ pt), float(WEIGHTS @ pc)
    cov = float(WEIGHTS @ (pt * pc)) - mt * mc
    rho = cov / np.sqrt(mt * (1 - mt) * mc * (1 - mc))
    return mt, mc, float(rho)


def coverage(replicates: int) -> pd.DataFrame:
    pro, enterprise = {"rater_scrutiny": "pro"}, {"rater_scrutiny": "enterprise"}
    scenarios: list[
        tuple[str, str, MotivationProfile, ArmSpec, ArmSpec, tuple[float, float], int]
    ] = [
        # name, design, profile, treated, control, true logits (t, c), samples, n, method
        (
            "pro vs enterprise, +1.0 logit",
            "rater_sycophancy",
            MotivationProfile(base_logit=-2.0, rater_sycophancy=1.0, request_sd=1.0),
            pro,
            enterprise,
            (-1.0, -2.0),
            1,
        ),
        (
            "null gap (pro vs enterprise)",
            "rater_sycophancy",
            MotivationProfile(base_logit=-1.0, request_sd=1.0),
            pro,
            enterprise,
            (-1.0, -1.0),
            1,
        ),
        (
            "TGG, 3 conditions/arm × 2 samples",
            "terminal_goal_guarding",
            MotivationProfile(base_logit=-2.0, terminal_goal_guarding=0.8, request_sd=1.0),
            {"trained": True},
            {"trained": False},
            (-1.2, -2.0),
            2,
        ),
    ]
    rows = []
    for n in (100, 400):
        for name, design, prof, tr, ct, (lt, lc), samples in scenarios:
            mt, mc, _ = truth(lt, lc, prof.request_sd)
            true_gap = mt - mc
            methods: list[Method] = ["paired", "newcombe"] if n == 100 else ["paired"]
            if n == 100 and samples == 1 and lt != lc:
                methods.append("bootstrap")
            for method in methods:
                reps = {"paired": replicates, "newcombe": replicates // 2}.get(
                    method, max(200, replicates // 5)
                )
                rng = np.random.default_rng(12345)
                hits = 0
                width = 0.0
                t0 = time.perf_counter()
                for _ in range(reps):
                    f = simulate_frame(design, prof, n_requests=n, samples=samples, seed=rng)
                    g = compliance_gap(
                        f, tr, ct, method=method, n_boot=1000, seed=int(rng.integers(1 << 31))
                    )
                    hits += g.ci_low <= true_gap <= g.ci_high
                    width += g.ci_high - g.ci_low
                lo, hi = wilson_interval(hits, reps)
                rows.append(
                    {
                        "scenario": name,
                        "n_requests": n,
                        "method": method,
                        "true_gap": round(true_gap, 4),
                        "replicates": reps,
                        "coverage": hits / reps,
                        "coverage_ci": f"[{lo:.3f}, {hi:.3f}]",
                        "mean_width": round(width / reps, 4),
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
    return pd.DataFrame(rows)


def null_fpr(replicates: int) -> pd.DataFrame:
    prof = MotivationProfile(base_logit=-1.5, request_sd=1.0)
    rng = np.random.default_rng(7)
    counts = dict.fromkeys(HYPOTHESES, 0)
    verdicts: dict[str, int] = {}
    any_supported = 0
    for _ in range(replicates):
        table = attribute(simulate_frame("all", prof, n_requests=400, seed=rng, model="null"))
        v = table.to_frame().set_index("hypothesis")["verdict"]
        for h in HYPOTHESES:
            counts[h] += v[h] == "supported"
        any_supported += bool((v == "supported").any())
        for verdict in v:
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
    rows = [{"hypothesis": h, "supported_rate": counts[h] / replicates} for h in HYPOTHESES]
    rows.append({"hypothesis": "any (family-wise)", "supported_rate": any_supported / replicates})
    out = pd.DataFrame(rows)
    out.attrs["verdicts"] = verdicts
    return out


def recovery(replicates: int, sizes: tuple[int, ...]) -> pd.DataFrame:
    truth_map = {name: prof.expected_verdicts() for name, prof in PROFILES.items()}
    rows = []
    for n in sizes:
        rng = np.random.default_rng(100 + n)
        tallies: list[pd.DataFrame] = []
        for _ in range(replicates):
            frames = [
                simulate_frame("all", name, n_requests=n, seed=rng, model=name) for name in PROFILES
            ]
            tallies.append(attribute(frames).compare(truth_map))
        allrows = pd.concat(tallies)
        grouped = allrows.groupby(["model", "hypothesis", "expected"], sort=False)
        for (model, hyp, expected), g in grouped:
            rows.append(
                {
                    "n_requests": n,
                    "model": model,
                    "hypothesis": hyp,
                    "expected": expected,
                    "supported_rate": g["detected"].mean(),
                    "conflicting_rate": (g["verdict"] == "conflicting").mean(),
                    "hit_rate": g["hit"].mean(),
                }
            )
    return pd.DataFrame(rows)


def _call_with_seed(gen: functools.partial[pd.DataFrame], rng: np.random.Generator) -> pd.DataFrame:
    return gen(seed=rng)


def power_check(replicates: int) -> pd.DataFrame:
    prof = MotivationProfile(base_logit=-2.0, rater_sycophancy=0.4, request_sd=1.0)
    mt, mc, rho = truth(-1.6, -2.0, 1.0)
    rows = []
    for n in (100, 200, 400, 800):
        analytic = power_gap(mc, mt - mc, n, correlation=rho, alternative="greater")
        gen = functools.partial(simulate_frame, "rater_sycophancy", prof, n_requests=n)
        sim = simulated_power(
            functools.partial(_call_with_seed, gen),
            ({"rater_scrutiny": "pro"}, {"rater_scrutiny": "enterprise"}),
            replicates=replicates,
            alternative="greater",
            seed=n,
            n=n,
        )
        rows.append(
            {
                "n_requests": n,
                "true_gap": round(mt - mc, 4),
                "rho": round(rho, 3),
                "analytic_power": round(analytic.power, 3),
                "simulated_power": sim.power,
                "simulated_ci": f"[{sim.ci_low:.3f}, {sim.ci_high:.3f}]",
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=1000, help="coverage replicates")
    ap.add_argument(
        "--attr-replicates",
        type=int,
        default=100,
        help="replicates of attribute() per n for recovery / null FPR",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    args = ap.parse_args()
    t0 = time.perf_counter()
    sections = [
        ("1. Coverage of the 95 % CI of the gap", coverage(args.replicates)),
        ("2. Null model: rate of 'supported'", null_fpr(2 * args.attr_replicates)),
        ("3. Recovery of planted motives", recovery(args.attr_replicates, tuple(args.sizes))),
        (
            "4. Analytic vs simulated power (one-sided, α = 0.05)",
            power_check(2 * args.attr_replicates),
        ),
    ]
    for title, frame in sections:
        print(f"\n## {title}\n")
        print(frame.to_string(index=False))
        if "verdicts" in frame.attrs:
            print("verdict counts:", frame.attrs["verdicts"])
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
