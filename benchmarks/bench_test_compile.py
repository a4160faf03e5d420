"""What XLA's compile settings cost the unit tests on JAX, side by side in one run.

The unit tests re-run on Keras's JAX backend in CI (``tests/_jax_suite.py``) build hundreds
of small models and train each for a few steps, so most of their time is XLA compiling.
This benchmark runs the same test files on JAX under each setting of ``XLA_FLAGS`` below,
each in a fresh process with an empty compilation cache, the settings interleaved for
``--repeats`` rounds, and reports pytest's wall time per setting beside the machine
(``/proc/cpuinfo``). ``tests/_on_backend.QUICK_COMPILE`` is what the tests use.

    python benchmarks/bench_test_compile.py --json benchmarks/results/test_compile.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _jax_suite import COMPILE_ONCE  # noqa: E402  (the tests' own settings, measured here)
from _on_backend import NO_FUSION_EMITTERS, QUICK_COMPILE  # noqa: E402

SETTINGS = {
    "XLA defaults": "",
    "no fusion emitters": NO_FUSION_EMITTERS,
    "no fusion emitters, LLVM -O0": " ".join(QUICK_COMPILE),
}
FILES = ("tests/test_weighting_loop.py", "tests/test_partial_labels.py")


def run(flags: str, files: tuple[str, ...]) -> dict:
    """pytest ``files`` on JAX with ``XLA_FLAGS=flags`` and a cache of its own."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": flags, "JAX_COMPILATION_CACHE_DIR": cache, **COMPILE_ONCE}  # fmt: skip
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-o", "addopts=", *files]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    return {"wall_s": round(wall, 1), "passed": int(passed.group(1)) if passed else 0,
            "returncode": done.returncode, "summary": summary}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--files", nargs="+", default=list(FILES))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_training import machine  # (same folder)

    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, {' '.join(info['vector_extensions'])}")
    rounds = []
    for r in range(args.repeats):
        for name, flags in SETTINGS.items():
            result = run(flags, tuple(args.files))
            rounds.append({"round": r + 1, "setting": name, "xla_flags": flags, **result})
            print(f"round {r + 1} {name:32s} {result['wall_s']:7.1f} s  {result['summary']}")
    medians = {name: statistics.median(x["wall_s"] for x in rounds if x["setting"] == name)
               for name in SETTINGS}  # fmt: skip
    base = medians["XLA defaults"]
    for name, wall in medians.items():
        print(f"{name:32s} median {wall:7.1f} s  ({wall / base:.2f}x the defaults)")
    if args.json:
        payload = {"benchmark": "test_compile", "machine": info, "command": " ".join(sys.argv),
                   "files": args.files, "rounds": rounds, "median_wall_s": medians}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
