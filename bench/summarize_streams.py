#!/usr/bin/env python3
"""Medians of bench/textgen.sh `streams` output (JSON lines on stdin)."""
import json
import statistics
import sys

text = sys.stdin.read()
decoder = json.JSONDecoder()
rows, i = [], 0
while i < len(text):
    if text[i].isspace():
        i += 1
        continue
    row, i = decoder.raw_decode(text, i)
    rows.append(row)

print(f"{'server':<8} {'streams':>7} {'runs':>4} {'aggregate tok/s':>16} {'decode tok/s p50':>17} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12}")
for who in ("llama", "hearth"):
    for c in sorted({r["concurrency"] for r in rows}):
        rs = [r["result"] for r in rows if r["who"] == who and r["concurrency"] == c]
        if not rs:
            continue
        med = lambda f: statistics.median(f(r) for r in rs)
        print(f"{who:<8} {c:>7} {len(rs):>4} {med(lambda r: r['aggregate_tok_s']):>16.1f} "
              f"{med(lambda r: r['decode_tok_s']['p50']):>17.1f} {med(lambda r: r['ttft_ms']['p50']):>12.0f} "
              f"{med(lambda r: r['ttft_ms']['p99']):>12.0f}")
