#!/usr/bin/env python3
"""Summarizes bench/gateway.sh: one table per round (oha JSON + wrk text)."""

import json
import re
import sys
from pathlib import Path


def oha(path: Path) -> dict:
    d = json.loads(path.read_text())
    pct = d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    ok = sum(n for c, n in codes.items() if c.startswith("2"))
    # Requests still in flight when the run's time is up are not failures.
    errors = {e: n for e, n in d.get("errorDistribution", {}).items() if "deadline" not in e}
    total = sum(codes.values()) + sum(errors.values())
    return {
        "p50_ms": pct["p50"] * 1000,
        "p99_ms": pct["p99"] * 1000,
        "rps": d["summary"]["requestsPerSec"],
        "ok": ok,
        "total": total,
    }


def wrk(path: Path) -> dict:
    text = path.read_text()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", text)
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return {
        "rps": rps,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def main() -> None:
    work, rounds = Path(sys.argv[1]), int(sys.argv[2])
    for r in range(1, rounds + 1):
        d, hm, lm = (oha(work / f"{n}-miss-r{r}.json") for n in ("direct", "hearth", "litellm"))
        hh, lh = (oha(work / f"{n}-hit-r{r}.json") for n in ("hearth", "litellm"))
        hx, lx = (wrk(work / f"{n}-max-r{r}.wrk") for n in ("hearth", "litellm"))
        print(f"round {r}")
        print("| measure | upstream direct | Hearth | LiteLLM | Hearth vs LiteLLM |")
        print("|---|---|---|---|---|")
        print(
            f"| miss p50 / p99 (ms) | {d['p50_ms']:.3f} / {d['p99_ms']:.3f} | "
            f"{hm['p50_ms']:.3f} / {hm['p99_ms']:.3f} | {lm['p50_ms']:.3f} / {lm['p99_ms']:.3f} | "
            f"p99 {lm['p99_ms'] / hm['p99_ms']:.1f}x lower |"
        )
        print(
            f"| miss latency added p50 / p99 (ms) | - | {hm['p50_ms'] - d['p50_ms']:.3f} / "
            f"{hm['p99_ms'] - d['p99_ms']:.3f} | {lm['p50_ms'] - d['p50_ms']:.3f} / "
            f"{lm['p99_ms'] - d['p99_ms']:.3f} | |"
        )
        print(
            f"| hit at 1,000 req/s: p50 / p99 (ms) | - | {hh['p50_ms']:.3f} / {hh['p99_ms']:.3f} "
            f"({hh['rps']:.0f} req/s) | {lh['p50_ms']:.3f} / {lh['p99_ms']:.3f} ({lh['rps']:.0f} req/s) | "
            f"p99 {lh['p99_ms'] / hh['p99_ms']:.1f}x lower |"
        )
        print(
            f"| hit max throughput (wrk -c32) | - | {hx['rps']:.0f} req/s, p99 {hx['p99_ms']:.2f} ms | "
            f"{lx['rps']:.0f} req/s, p99 {lx['p99_ms']:.2f} ms | **{hx['rps'] / lx['rps']:.1f}x** |"
        )
        bad = {
            n: v
            for n, v in {
                "direct-miss": d, "hearth-miss": hm, "litellm-miss": lm,
                "hearth-hit": hh, "litellm-hit": lh,
            }.items()
            if v["ok"] != v["total"]
        }
        for n, v in bad.items():
            print(f"  {n}: {v['total'] - v['ok']} of {v['total']} requests failed")
        for n, v in {"hearth-max": hx, "litellm-max": lx}.items():
            if v["non2xx"] or v["socket_errors"]:
                print(f"  {n}: {v['non2xx']} non-2xx; {v['socket_errors']}")


if __name__ == "__main__":
    main()
