"""Predicted vs actual seconds: submit jobs of a few sizes one after another to a running service and
compare the ETA the API gave when each job started with how long it then ran.

    show1 up --port 8000 &            # or any deployment
    python bench/eta_accuracy.py --base http://127.0.0.1:8000 [--key KEY]

Prints one row per job: the job's size, its cost (models/cost.py), the ETA at its first running poll,
the ETA at about a quarter of the way, and the seconds it actually ran (started_at to finished_at).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.cost import REFERENCE_COST, total_cost  # noqa: E402
from models.params import GenerationParams  # noqa: E402

JOBS = {
    "demo (16x24, 2 steps)": {},
    "pixel SR 8 steps": {"steps": {"sr1": 8}},
    "12 keyframes, pixel SR 8": {"num_keyframes": 12, "steps": {"sr1": 8}},
    "40x64 keyframes, 2 steps": {"keyframe_size": {"height": 40, "width": 64}},
    "40x64, 128x224 out, 4 steps": {
        "keyframe_size": {"height": 40, "width": 64},
        "output_size": {"height": 128, "width": 224},
        "steps": {"base": 4, "interp": 4, "sr1_image": 4, "sr1": 4, "sr2": 4},
    },
}


def seconds_between(start: str, end: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def run(base: str, key: str | None) -> list[dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(base_url=base, headers=headers, timeout=30)
    rows = []
    for name, extra in JOBS.items():
        job = client.post("/v1/videos", json={"prompt": "eta check", "seed": 1, **extra}).json()
        first_eta = quarter_eta = None
        while True:
            answer = client.get(f"/v1/videos/{job['id']}")
            if answer.status_code == 429:  # polled past the key's rate limit: wait it out
                time.sleep(float(answer.headers.get("Retry-After", 1)))
                continue
            view = answer.json()
            if view["status"] == "running" and first_eta is None:
                first_eta = view["eta_seconds"]
            if view["status"] == "running" and quarter_eta is None and view["progress"] >= 0.25:
                quarter_eta = (view["eta_seconds"], seconds_between(view["started_at"], _now()))
            if view["status"] not in ("queued", "running"):
                break
            time.sleep(0.15)  # under the default 600 requests per minute
        actual = seconds_between(view["started_at"], view["finished_at"])
        cost = total_cost(GenerationParams.from_dict(view["params"])) / REFERENCE_COST
        rows.append(
            {
                "job": name,
                "status": view["status"],
                "cost_vs_default": round(cost, 5),
                "eta_at_start": first_eta,
                "eta_at_quarter": None if quarter_eta is None else round(quarter_eta[0] + quarter_eta[1], 1),
                "actual_seconds": round(actual, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _now() -> str:
    return datetime.now().astimezone().isoformat()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--key")
    args = parser.parse_args()
    rows = run(args.base, args.key)
    print("\n| job | cost (default videos) | ETA at start (s) | ETA at 25 % + elapsed (s) | actual (s) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['job']} | {row['cost_vs_default']} | {row['eta_at_start']} | {row['eta_at_quarter']} "
            f"| {row['actual_seconds']} |"
        )


if __name__ == "__main__":
    main()
