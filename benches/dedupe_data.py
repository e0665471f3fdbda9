"""Writes the dedupe benchmark's input: EVENTS JSON lines in 20 files, ids k0..k(EVENTS/2 - 1)
each sent twice (the second copy half the stream later), event times spread over 30 minutes.

Usage: dedupe_data.py OUT_DIR EVENTS
"""
import json
import pathlib
import sys

out, events = pathlib.Path(sys.argv[1]), int(sys.argv[2])
keys = events // 2
out.mkdir(parents=True, exist_ok=True)
per_file = events // 20
base_ms = 1_709_251_200_000  # 2024-03-01T00:00:00Z
for f in range(20):
    lines = []
    for n in range(f * per_file, (f + 1) * per_file):
        k = (n * 7919) % keys
        # Both copies carry the event time of the id's first send.
        first = n if n < keys else n - keys
        ts = base_ms + first * 1_800_000 // keys
        lines.append(json.dumps({"id": f"k{k}", "user_id": f"u{k % 5000}",
                                 "amount": (k % 1000) / 10, "ts": ts}, separators=(",", ":")))
    (out / f"part-{f:02}.json").write_text("\n".join(lines) + "\n")
