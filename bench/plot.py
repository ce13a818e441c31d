"""``latest.png`` from ``latest.json``: latency distribution per case, and throughput.

python -m bench.plot bench/results/latest.json   # writes bench/results/latest.png
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def _nines(p: float) -> float:
    """x position of percentile ``p`` on a "nines" axis (50 -> 0.3, 90 -> 1, 99 -> 2)."""
    return -math.log10(max(1e-6, 1 - min(p, 99.9999) / 100))


def plot(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dists: dict[str, dict[str, float]] = results.get("distributions", {})
    cases: dict[str, dict[str, Any]] = results.get("cases", {})
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]}, layout="constrained"
    )

    ticks = [0, 50, 90, 99, 99.9, 99.99]
    for name, pct in dists.items():
        points = sorted((float(p), v) for p, v in pct.items() if float(p) < 100)
        xs = [_nines(p) for p, _ in points]
        ys = [max(v, 1e-3) for _, v in points]
        style = "--" if "@" in name else "-"
        ax.plot(xs, ys, style, marker=".", label=f"{name} (max {pct.get('100', 0):.1f} ms)")
    ax.set_xticks([_nines(t) for t in ticks], [f"p{t:g}" if t else "min" for t in ticks])
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_xlabel("percentile")
    ax.set_title("AdmissionReview latency per case (solid: max throughput, dashed: fixed rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    names = [n for n in cases if "@" not in n]
    rps = [cases[n]["rps"] for n in names]
    bars = bx.bar(names, rps, color=["#888888" if n == "noop" else "#1f77b4" for n in names])
    for bar, value in zip(bars, rps, strict=True):
        bx.annotate(
            f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    if "noop" in cases:
        half = cases["noop"]["rps"] * 0.5
        bx.axhline(half, color="red", linestyle=":", label="target: warm >= 0.5 x noop")
        bx.legend(fontsize=8)
    bx.set_ylabel("reviews/s (kitpin pinned to one core)")
    bx.set_title("max throughput")
    machine = results.get("machine", {})
    fig.suptitle(
        f"kitpin bench {'(quick) ' if machine.get('quick') else ''}"
        f"{machine.get('timestamp', '')} {machine.get('cpu_model', '')}",
        fontsize=10,
    )
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
    out = plot(json.loads(src.read_text()), src.with_suffix(".png"))
    print(out)


if __name__ == "__main__":
    main()
