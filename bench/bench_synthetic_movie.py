"""Benchmark: writing synthetic movies, against the previous generator.

::

    python bench/bench_synthetic_movie.py [--size 512] [--nframes 8000]
                                          [--baseline_nframes 1000]

1. ``write_movie`` of the realistic and the easy preset at ``--size`` squared x
   ``--nframes`` (goal: 512 x 512 x 8,000 in under 2 minutes on 2 cores): wall
   time, CPU time, peak resident memory (each in a fresh process).
2. The same size at ``--baseline_nframes`` frames written by the new generator
   and by the generator of commit ``PREVIOUS_GENERATOR`` (dense masks, one
   thread, Poisson draws), loaded from git; the ratio is printed. The previous
   generator is run on fewer frames because it needs ~470 s for 8,000.

The machine's load average is printed: it is shared, and wall times grow with it.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The last commit with the dense, single-threaded generator.
PREVIOUS_GENERATOR = "0d094f4601f45aa6ec4fa455fb0321a669802ed1"

WRITE_ONE = """
import resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from synthetic_movie import MovieSpec, write_movie
preset, nframes, size, path = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
if preset == "previous":
    spec = MovieSpec(nframes=nframes, height=size, width=size,
                     ncells=round(30 * size * size / 128 ** 2), seed=0)
else:
    from synthetic_movie import preset_spec
    spec = preset_spec(preset, nframes, size, size, 0)
started, cpu = time.perf_counter(), time.process_time()
write_movie(path, spec)
print(time.perf_counter() - started, time.process_time() - cpu,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_in_fresh_process(module_dir: Path, preset: str, nframes: int, size: int,
                           work: Path) -> tuple[float, float, float]:
    """Write one movie in a new process; return wall s, CPU s, peak RSS MiB."""
    path = work / f"{preset}_{nframes}.h5"
    output = subprocess.run([sys.executable, "-c", WRITE_ONE, str(module_dir), preset,
                             str(nframes), str(size), str(path)], check=True,
                            capture_output=True, text=True).stdout
    for written in work.glob(f"{preset}_{nframes}*.h5"):
        written.unlink()
    wall, cpu, peak = map(float, output.split())
    return wall, cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--nframes", type=int, default=8000)
    parser.add_argument("--baseline_nframes", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench_synthetic_") as work:
        work = Path(work)
        current = REPO_ROOT / "slapp" / "demo"
        previous = work / "previous"
        previous.mkdir()
        (previous / "synthetic_movie.py").write_text(subprocess.run(
            ["git", "-C", str(REPO_ROOT), "show",
             f"{PREVIOUS_GENERATOR}:slapp/demo/synthetic_movie.py"],
            check=True, capture_output=True, text=True).stdout)
        print(f"\n{'movie':44}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}")
        for preset in ("realistic", "easy"):
            wall, cpu, peak = write_in_fresh_process(current, preset, args.nframes, args.size,
                                                     work)
            print(f"{preset + f' {args.size}x{args.size}x{args.nframes}':44}"
                  f"{wall:8.1f}{cpu:8.1f}{peak:10.0f}")
        label = f"{args.size}x{args.size}x{args.baseline_nframes}"
        new = write_in_fresh_process(current, "easy", args.baseline_nframes, args.size, work)
        old = write_in_fresh_process(previous, "previous", args.baseline_nframes, args.size,
                                     work)
        print(f"{'easy ' + label + ', this generator':44}{new[0]:8.1f}{new[1]:8.1f}"
              f"{new[2]:10.0f}")
        print(f"{'easy ' + label + ', previous generator':44}{old[0]:8.1f}{old[1]:8.1f}"
              f"{old[2]:10.0f}")
        print(f"previous / this: wall {old[0] / new[0]:.1f}x, CPU {old[1] / new[1]:.1f}x")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    sys.exit(main())
