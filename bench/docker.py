"""Node image: build times and size. Writes bench/results/docker.json.

    python bench/docker.py [--cold] [--image p2pinfer:bench]

Steps, each timed on its own:
  base      scripts/docker-base (python:3.12-slim if it can be had, else
            localbase:bookworm from Debian's packages; with --cold the local
            base is removed first, so this is the cold debootstrap build)
  wheels    scripts/docker-wheels (with --cold the wheelhouse is emptied
            first; pip's cache holds llama-cpp-python's wheel once this
            machine compiled it, so nothing is compiled here)
  image     docker build --no-cache with the wheelhouse: every layer rebuilt,
            nothing compiled
  rebuild   docker build again, every layer from the cache
Goal: image < 1 GB with the default model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, machine, results_path, write_result

RESULTS = results_path("docker.json")
LOCAL_BASE = "localbase:bookworm"


def timed(cmd: list[str], timeout_s: float = 1800.0) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc.stdout


def image_bytes(image: str) -> int:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return int(out.strip())


def run(image: str, cold: bool) -> dict[str, object]:
    if cold:
        subprocess.run(["docker", "image", "rm", "-f", LOCAL_BASE], capture_output=True,
                       check=False, timeout=120)
        for old in (ROOT / "docker" / "wheels").glob("*.whl"):
            old.unlink()
    base_s, out = timed(["bash", "scripts/docker-base"])
    base = out.strip().splitlines()[-1]
    wheels_s, _ = timed(["bash", "scripts/docker-wheels", base])
    build = ["docker", "build", "-q", "-f", "docker/Dockerfile",
             "--build-arg", f"BASE_IMAGE={base}", "-t", image, "."]
    image_s, _ = timed([*build[:2], "--no-cache", *build[2:]])
    rebuild_s, _ = timed(build)
    wheels = sorted((ROOT / "docker" / "wheels").glob("*.whl"))
    size = image_bytes(image)
    return {
        "base_image": base,
        "cold": cold,
        "base_s": round(base_s, 1),
        "base_bytes": image_bytes(base),
        "wheels_s": round(wheels_s, 1),
        "wheelhouse_files": len(wheels),
        "wheelhouse_bytes": sum(w.stat().st_size for w in wheels),
        "image_build_no_cache_s": round(image_s, 1),
        "image_rebuild_cached_s": round(rebuild_s, 1),
        "image": image,
        "image_bytes": size,
        "image_mb": round(size / 1e6, 1),
        "goal_image_below_1gb": size < 1_000_000_000,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true",
                        help=f"remove {LOCAL_BASE} and the wheelhouse first")
    parser.add_argument("--image", default="p2pinfer:bench")
    args = parser.parse_args()
    result = run(args.image, args.cold)
    write_result(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
