"""Unstructured pruning, tfcompress next to tfmot, on the mobile block (issue 12's table).

Mobile block (Conv-BN-ReLU6, DepthwiseConv-BN-ReLU6, 1x1 Conv-BN, residual Add, Conv,
GAP, Dense 128, Dense 10) trained 25 epochs on the digits, then every kernel pruned to
80% with PolynomialDecay over 6 epochs (frequency 10), 10 epochs, Adam 1e-3: the same
script (`_mobile_block_pruning.py`) for both tools, one subprocess per tool and seed
(tfmot's with `TF_USE_LEGACY_KERAS=1`, so it never shares a process with Keras 3).

    python benchmarks/pruning_parity.py            # seeds 0 1 2, ~10 min on 2 cores
    python benchmarks/pruning_parity.py --seeds 0 1 2 3 4 5

Needs the bench extra (tensorflow-model-optimization, tf_keras).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_LINE = re.compile(r"^(\w+) seed (\d+): float ([\d.]+) pruned ([\d.]+)$", re.M)


def run(tool, seed):
    """`(float accuracy, pruned accuracy)` of one tool on one seed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if tool == "tfmot":
        env["TF_USE_LEGACY_KERAS"] = "1"
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "_mobile_block_pruning.py"), "--tool", tool, "--seed", str(seed)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    match = _LINE.search(out)
    if match is None:
        raise RuntimeError(f"{tool} seed {seed} printed no result:\n{out}")
    return float(match.group(3)), float(match.group(4))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = {}
    for seed in args.seeds:
        for tool in ("tfmot", "tfcompress"):  # alternate, so load hits both alike
            rows.setdefault(tool, []).append(run(tool, seed))
            print(f"{tool} seed {seed}: float {rows[tool][-1][0]:.3f} pruned {rows[tool][-1][1]:.3f}", flush=True)
    print("\n| tool | float | pruned 80% | mean drop |\n|---|---|---|---|")
    for tool, results in rows.items():
        floats = " / ".join(f"{f:.3f}" for f, _ in results)
        pruned = " / ".join(f"{p:.3f}" for _, p in results)
        drop = statistics.fmean(f - p for f, p in results)
        mean = statistics.fmean(p for _, p in results)
        print(f"| {tool} | {floats} | {pruned} (mean {mean:.3f}) | {100 * drop:.1f} pt |")


if __name__ == "__main__":
    main()
