#!/usr/bin/env python3
"""Training throughput from JPEG files on disk (mae-worker) against the model alone on
images in memory (mae bench step): same model (mae_vit_tiny_patch4, 32 px), batch and
threads, interleaved round by round in one run. Needs release builds (swift build -c release).

Three measures per round:
  mean      images / wall time over the timed steps (after one warm-up step), as mae bench step reports;
  best      the fastest single step of each, which other load on a shared machine disturbs least;
  cpu       CPU seconds (user + system, all threads) per step, from the difference of a run of
            1 + K steps and a run of 1 + 1 steps, so start-up and the final checkpoint cancel out.

usage: tools/bench_training_from_disk.py [--threads 2] [--batch 64] [--steps 8] [--rounds 3]
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binaries = os.path.join(root, ".build", "release")


def run(arguments):
    """Runs a command to its end; returns its standard output."""
    process = subprocess.run(arguments, capture_output=True, text=True, timeout=1800)
    if process.returncode != 0:
        sys.exit(f"{' '.join(arguments)} failed ({process.returncode}):\n{process.stderr}")
    return process.stdout


def timed(arguments):
    """Runs a command and returns (stdout, (user, system) CPU seconds it used)."""
    before = os.times()
    output = run(arguments)
    after = os.times()
    return output, (after.children_user - before.children_user, after.children_system - before.children_system)


def per_step(long, short, steps):
    """CPU seconds per step (user, system) from runs that differ by `steps` steps."""
    return tuple((a - b) / steps for a, b in zip(long, short))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    mae, worker = os.path.join(binaries, "mae"), os.path.join(binaries, "mae-worker")
    work = tempfile.mkdtemp(prefix="mae-bench-disk.")
    try:
        data = os.path.join(work, "data")
        # 2000 JPEG files of 64 px: 31 batches of 64 per epoch, so no epoch ends in a round.
        run([mae, "synth-data", data, "--classes", "10", "--per-class", "200", "--val-per-class", "1",
             "--size", "64", "--seed", "1"])

        def bench(steps):
            return timed([mae, "bench", "step", "--model", "mae_vit_tiny_patch4", "--input-size", "32",
                          "--batch", str(options.batch), "--threads", str(options.threads), "--steps", str(steps)])

        def train(steps, name):
            run_directory = os.path.join(work, name)
            _, cpu = timed([worker, "--standalone", "--data", data, "--model", "mae_vit_tiny_patch4",
                            "--input-size", "32", "--batch-size", str(options.batch), "--epochs", "100",
                            "--warmup-epochs", "1", "--threads", str(options.threads),
                            "--max-steps", str(steps + 1), "--print-every", "1", "--run-dir", run_directory])
            lines = [json.loads(line) for line in open(os.path.join(run_directory, "metrics.jsonl"))]
            return lines, cpu

        ratios = {"mean": [], "best": [], "cpu": []}
        for round_number in range(1, options.rounds + 1):
            output, bench_cpu_long = bench(options.steps)
            _, bench_cpu_short = bench(1)
            memory_mean = float(re.search(r"img_per_s=([0-9.]+)", output).group(1))
            step_ms = [float(t) for t in re.findall(r"^step \d+: .* time ([0-9.]+) ms", output, re.M)]
            memory_best = options.batch / (min(step_ms) / 1000)
            memory_user, memory_system = per_step(bench_cpu_long, bench_cpu_short, options.steps - 1)
            memory_cpu = memory_user + memory_system

            lines, train_cpu_long = train(options.steps, f"long-{round_number}")
            _, train_cpu_short = train(1, f"short-{round_number}")
            seconds = lines[-1]["elapsed_seconds"] - lines[0]["elapsed_seconds"]
            disk_mean = (len(lines) - 1) * options.batch / seconds
            disk_best = options.batch / min(line["seconds_per_step"] for line in lines[1:])
            # --max-steps K+1 and 2: K-1 steps apart, as the two bench runs (1+K and 1+1 steps).
            disk_user, disk_system = per_step(train_cpu_long, train_cpu_short, options.steps - 1)
            disk_cpu = disk_user + disk_system
            wait = 100 * statistics.mean(line["data_wait_share"] for line in lines[1:])
            ratios["mean"].append(disk_mean / memory_mean)
            ratios["best"].append(disk_best / memory_best)
            ratios["cpu"].append(memory_cpu / disk_cpu)
            print(f"round {round_number}: mean img/s {memory_mean:.1f} in memory, {disk_mean:.1f} from disk "
                  f"({disk_mean / memory_mean:.3f}); best step img/s {memory_best:.1f} / {disk_best:.1f} "
                  f"({disk_best / memory_best:.3f}); CPU s per step {memory_cpu:.3f} / {disk_cpu:.3f} "
                  f"({memory_cpu / disk_cpu:.3f}; user {memory_user:.3f} / {disk_user:.3f}, system {memory_system:.3f} / "
                  f"{disk_system:.3f}); data wait {wait:.2f}%", flush=True)
        print("median ratios (from disk / in memory; for CPU: in memory / from disk): "
              + ", ".join(f"{key} {statistics.median(values):.3f}" for key, values in ratios.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
