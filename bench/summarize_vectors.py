"""Summarise bench/vectors.sh: QPS at the lowest ef reaching a recall target,
Hearth vs faiss and hnswlib per round, and the filtered and build rows."""
import json
import sys
from pathlib import Path

data, rounds = Path(sys.argv[1]), int(sys.argv[2])


def at_target(rows, target):
    for row in sorted(rows, key=lambda r: r["ef"]):
        if row["recall"] >= target:
            return row
    return None


for r in range(1, rounds + 1):
    peers = json.loads((data / f"peers-{r}.json").read_text())
    ours = [json.loads(l) for l in (data / f"hearth-{r}.jsonl").read_text().splitlines() if l.strip()]
    sweep = [o for o in ours if "ef" in o]
    build = next(o["build"] for o in ours if "build" in o)
    filtered = next(o["filtered_1pct"] for o in ours if "filtered_1pct" in o)
    writes = next(o["writes"] for o in ours if "writes" in o)
    print(f"round {r}")
    for target in (0.95, 0.99):
        h = at_target(sweep, target)
        for lib in ("faiss_hnsw", "hnswlib"):
            p = at_target([{"ef": s["ef"], "recall": s["recall"], "qps": s["qps_1t"]["median"]}
                           for s in peers[lib]["settings"]], target)
            print(f"  recall>={target}: hearth ef={h['ef']} {h['qps_1t']:.0f} QPS (recall {h['recall']:.4f})"
                  f" vs {lib} ef={p['ef']} {p['qps']:.0f} (recall {p['recall']:.4f}) = {h['qps_1t'] / p['qps']:.2f}x")
    scan = next(x for x in peers["filtered"]["rows"] if x["lib"].startswith("numpy"))
    print(f"  filtered 1%: hearth {filtered['qps_1t']:.0f} QPS recall {filtered['recall']:.3f}"
          f" vs numpy exact subset scan {scan['qps_1t']['median']:.0f} = {filtered['qps_1t'] / scan['qps_1t']['median']:.2f}x")
    for lib in ("faiss_hnsw", "hnswlib"):
        b = peers[lib]
        secs = b["build_s"]["median"] if isinstance(b["build_s"], dict) else b["build_s"]
        mem = b["rss_delta_mib"]["median"] if isinstance(b["rss_delta_mib"], dict) else b["rss_delta_mib"]
        print(f"  build: hearth {build['seconds']:.1f} s (+{build['rss_delta_mib']:.0f} MiB, ids and metadata included)"
              f" vs {lib} {secs:.1f} s (+{mem:.0f} MiB) = {secs / build['seconds']:.2f}x faster")
    print(f"  writes: {writes['acknowledged_per_s']:.0f} vectors/s acknowledged (logged + fsynced),"
          f" {writes['applied_per_s']:.0f} vectors/s applied to the graph")
