"""A stand-in for a resumable training job: one checkpoint file per step, resume from the newest."""
import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--delay", type=float, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start = int(args.state.read_text()) if args.state.is_file() else 0
    job = os.environ.get("SLURM_JOB_ID", "none")
    print(f"job {job}: {'resumed from step ' + str(start) if start else 'starting at step 0'}", flush=True)
    for step in range(start + 1, args.steps + 1):
        time.sleep(args.delay)
        tmp = args.state.with_suffix(".tmp")
        tmp.write_text(str(step))
        os.replace(tmp, args.state)
        print(f"job {job}: step {step}", flush=True)
    args.out.write_text(f"steps={args.steps} first_step_this_attempt={start + 1} job={job}\n")


if __name__ == "__main__":
    main()
