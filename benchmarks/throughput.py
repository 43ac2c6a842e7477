"""Throughput of ``create_task``: the clients and their telemetry against a raw aiohttp loop.

Every side sends N creates to a minimal fast local server running in another process
(``benchmarks/_fastserver.py``), at the same concurrency cap:

- ``raw``: a hand-written aiohttp loop doing the same work (the baseline);
- ``sdk``: ``AsyncWanClient`` as installed here, no telemetry configured;
- ``no-otel``: the same with opentelemetry made unimportable (a ``sys.meta_path``
  finder): checked that no ``opentelemetry`` module is loaded after the run;
- ``otel-api``: opentelemetry importable, no SDK configured (the global providers are
  the API's proxies): the client's no-op path;
- ``otel-sdk``: an opentelemetry-sdk ``TracerProvider`` (``BatchSpanProcessor`` into an
  ``InMemorySpanExporter``; ``--span-processor simple`` for ``SimpleSpanProcessor``)
  and a ``MeterProvider`` with an ``InMemoryMetricReader``, passed as
  ``tracer_provider=``/``meter_provider=``: checked that every span and duration was
  recorded;
- ``blocking``: one ``WanClient`` shared by ``--threads`` threads making blocking calls
  (``max_concurrency`` the same cap; at most ``--threads`` calls in flight).

Each run is a fresh worker process (this script with ``--worker``, importing the
``wan26_async`` of the tree the script is in), so every side starts alike and the
no-otel side can block the import. A round runs every side once,
in an order rotated and reversed round to round, with the same ``PYTHONHASHSEED`` for
every side of a round. A shared machine's noise only adds time, so the best rounds are
compared; per-round paired ratios (median and range) show the spread. CPU seconds
(``time.process_time()``, every thread of the worker) are printed per run.
Targets: sdk time / raw time <= 1.05 (the watch-budget issue; 1.10 before); otel-api /
no-otel <= 1.03.

    python benchmarks/throughput.py [--sides raw,sdk,...] [--n 10000] [--concurrency 64] [--pin]
                                    [--threads 8] [--rounds 7] [--distinct] [--json]
    python benchmarks/throughput.py --profile [--sides otel-api]  # one run under cProfile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

try:  # python -m benchmarks.throughput
    from benchmarks._fastserver import start_server, stop_server
    from benchmarks._throughput_sides import Run, worker_main
except ModuleNotFoundError:  # python benchmarks/throughput.py
    from _fastserver import start_server, stop_server  # type: ignore[no-redef,import-not-found]
    from _throughput_sides import Run, worker_main  # type: ignore[no-redef,import-not-found]

SIDES = ("raw", "sdk", "no-otel", "otel-api", "otel-sdk", "blocking")
#: The ratios printed besides every side against raw: (side, baseline, target of side
#: time / baseline time, or None).
RATIOS = (("sdk", "raw", 1.05), ("otel-api", "no-otel", 1.03), ("otel-sdk", "no-otel", None),
          ("blocking", "sdk", None))
BUSY = 1.10  # best round's wall / CPU seconds above which times are the machine's load
ROOT = Path(__file__).resolve().parent.parent


# -- in the parent: rounds and figures --------------------------------------------------


def spawn(side: str, args: argparse.Namespace, port: int, seed: int) -> Run | None:
    """One run of ``side`` in a fresh worker process (None under ``--profile``, whose
    worker prints its own report)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side,
           "--port", str(port), "--n", str(args.n), "--concurrency", str(args.concurrency),
           "--threads", str(args.threads), "--run-timeout", str(args.run_timeout),
           "--span-processor", args.span_processor]
    cmd += [flag for flag, on in (("--distinct", args.distinct), ("--profile", args.profile),
                                  ("--malloc-default", args.malloc_default)) if on]
    # The package of the tree this script is in, ahead of any installed one.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": path}
    if args.profile:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=args.run_timeout + 60)
        return None
    cpus = _pinned(args)
    done = subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE,
                          text=True, timeout=args.run_timeout + 60,
                          preexec_fn=None if cpus is None else
                          (lambda: os.sched_setaffinity(0, {cpus[0]})))
    return Run(**json.loads(done.stdout.strip().splitlines()[-1]))


def _pinned(args: argparse.Namespace) -> tuple[int, int] | None:
    """With ``--pin``: the CPU of the worker (the client) and the one of the server, two
    different ones, so that neither waits for the other's core (None: not pinned)."""
    if not args.pin or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[-1]) if len(cpus) >= 2 else None


def order_of(sides: Sequence[str], i: int) -> list[str]:
    """Round i's order: reversed every other round, rotated by one every two rounds (so
    each pair of sides runs in both orders, two sides included)."""
    k = ((i - 1) // 2) % len(sides)
    order = [*sides[k:], *sides[:k]]
    return order[::-1] if i % 2 == 0 else order


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Per side: best and median rate and CPU; per pair of RATIOS: the best rounds' time
    and CPU ratios and the spread of the per-round paired time ratios."""
    sides: dict[str, Any] = {}
    for side, rs in runs.items():
        best = min(rs, key=lambda r: r.seconds)
        sides[side] = {
            "best_rate": round(best.rate, 1),
            "median_rate": round(statistics.median(r.rate for r in rs), 1),
            "best_cpu_us_per_call": round(1e6 * min(r.cpu for r in rs) / best.n, 2),
            "median_cpu_us_per_call": round(1e6 * statistics.median(r.cpu for r in rs)
                                            / best.n, 2),
            "check": best.check,
            "runs": [{**asdict(r), "rate": round(r.rate, 1)} for r in rs],
        }
    ratios = []
    vs_raw = [(side, "raw", None) for side in SIDES if side not in ("raw", "sdk")]
    for side, base, target in [*RATIOS[:1], *vs_raw, *RATIOS[1:]]:
        if side not in runs or base not in runs:
            continue
        xs, bs = runs[side], runs[base]
        time_ratio = min(r.seconds for r in xs) / min(r.seconds for r in bs)
        paired = _spread([x.seconds / b.seconds for x, b in zip(xs, bs, strict=True)])
        paired_cpu = _spread([x.cpu / b.cpu for x, b in zip(xs, bs, strict=True)])
        ratios.append({
            "side": side, "baseline": base, "target": target,
            "time_ratio": round(time_ratio, 4),
            "cpu_ratio": round(min(r.cpu for r in xs) / min(r.cpu for r in bs), 4),
            "paired_time_ratio": {k: round(v, 4) for k, v in paired.items()},
            "paired_cpu_ratio": {k: round(v, 4) for k, v in paired_cpu.items()},
            "verdict": None if target is None else "ok" if time_ratio <= target
            else "over target",
        })
    # A CPU-bound side that waited well beyond its CPU seconds even in its best round
    # did not have a core to itself: its times measure the machine's other load.
    busy = {side: round(min(rs, key=lambda r: r.seconds).seconds
                        / min(rs, key=lambda r: r.seconds).cpu, 3)
            for side, rs in runs.items() if side != "blocking"}
    return {"sides": sides, "ratios": ratios, "best_wall_over_cpu": busy}


def report(summary: dict[str, Any]) -> None:
    print(f"\n{'side':<9} {'best req/s':>10} {'median':>8} {'cpu us/call best':>17} "
          f"{'median':>7}  set-up")
    for side, s in summary["sides"].items():
        print(f"{side:<9} {s['best_rate']:>10.0f} {s['median_rate']:>8.0f} "
              f"{s['best_cpu_us_per_call']:>17.1f} {s['median_cpu_us_per_call']:>7.1f}  "
              f"{s['check']}")
    print()
    print("ratios of the best rounds, then of each round's pair: median (min-max)")
    for r in summary["ratios"]:
        p, c = r["paired_time_ratio"], r["paired_cpu_ratio"]
        target = "" if r["target"] is None else \
            f"  target time <= {r['target']:.2f}: {r['verdict']}"
        print(f"{r['side'] + ' / ' + r['baseline']:<19} time {r['time_ratio']:.3f} "
              f"{p['median']:.3f} ({p['min']:.3f}-{p['max']:.3f})  cpu {r['cpu_ratio']:.3f} "
              f"{c['median']:.3f} ({c['min']:.3f}-{c['max']:.3f}){target}")
    busy = {side: x for side, x in summary["best_wall_over_cpu"].items() if x > BUSY}
    if busy:
        print("even the best rounds waited beyond their CPU time (wall/cpu "
              f"{', '.join(f'{s} {x:.2f}' for s, x in busy.items())}): the machine was "
              "busy, or (at a low --concurrency) the client waited on the server; the "
              "time ratios measure that, the CPU ratios the clients")


def _sigterm_as_ctrl_c(signum: int, frame: object) -> None:
    # Handled like Ctrl-C, so the finally that stops the server runs: through the SIGINT
    # handler when there is one (asyncio.run's cancels its task cleanly), else directly
    # (SIGINT is ignored in a job started in the background).
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:
        raise KeyboardInterrupt


def _sides(text: str) -> list[str]:
    sides = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown or not sides or len(set(sides)) != len(sides):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of distinct sides of {','.join(SIDES)}")
    return sides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=_sides, default=None,
                        help=f"sides to run (default: all, {','.join(SIDES)}; "
                             "with --profile: sdk)")
    parser.add_argument("--n", type=int, default=10000, help="creates per run (10000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="in-flight calls, the clients' max_concurrency (64)")
    parser.add_argument("--threads", type=int, default=8,
                        help="threads sharing the blocking WanClient (8)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of every side (7)")
    parser.add_argument("--span-processor", choices=("batch", "simple"), default="batch",
                        help="otel-sdk: BatchSpanProcessor or SimpleSpanProcessor (batch)")
    parser.add_argument("--json", action="store_true",
                        help="also print one JSON object with the figures at the end")
    parser.add_argument("--run-timeout", type=float, default=300.0,
                        help="fail (with stacks) if one run takes longer (300 s)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's dynamic malloc thresholds alone (noisier)")
    parser.add_argument("--pin", action="store_true",
                        help="run the server on one CPU and each worker on another "
                             "(Linux, 2+ CPUs): less noise from the two sharing a core")
    parser.add_argument("--distinct", action="store_true",
                        help="a new request object (clients) / body dict (raw) per call, "
                             "built before the timed part: no reuse of an encoded body")
    parser.add_argument("--profile", action="store_true",
                        help="run each side once under cProfile in its worker; print the "
                             "top 25 functions by tottime (no rounds; not blocking)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.n, args.concurrency, args.threads, args.rounds) < 1 or args.run_timeout <= 0:
        parser.error("--n, --concurrency, --threads, --rounds and --run-timeout must be "
                     "positive")
    if args.worker:
        return worker_main(args)
    sides = args.sides or (["sdk"] if args.profile else list(SIDES))
    if args.profile and "blocking" in sides:
        parser.error("--profile profiles one thread: leave blocking out of --sides")

    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    proc, port = start_server()
    pinned = _pinned(args)
    if pinned is not None:
        os.sched_setaffinity(proc.pid, {pinned[1]})
    runs: dict[str, list[Run]] = {side: [] for side in sides}
    try:
        if args.profile:
            for side in sides:
                spawn(side, args, port, seed=1)
            return 0
        print(f"fast server pid {proc.pid} on port {port}; n={args.n} "
              f"concurrency={args.concurrency} threads={args.threads} rounds={args.rounds} "
              f"sides={','.join(sides)}; malloc thresholds pinned: "
              f"{'no' if args.malloc_default else 'yes'}; {os.cpu_count()} cpus"
              f"{'' if pinned is None else f'; worker on cpu {pinned[0]}, server on {pinned[1]}'}",
              flush=True)
        for i in range(1, args.rounds + 1):
            for side in order_of(sides, i):
                run = spawn(side, args, port, seed=i)
                assert run is not None
                runs[side].append(run)
                print(f"round {i} {side:<9} {run.n} req in {run.seconds:.2f} s "
                      f"({run.rate:.0f}/s, cpu {run.cpu:.2f} s)", flush=True)
    finally:
        stop_server(proc)

    summary = summarize(runs)
    report(summary)
    if args.json:
        sys.path.insert(0, str(ROOT))  # the version the workers ran
        import wan26_async as wan

        print(json.dumps({
            "n": args.n, "concurrency": args.concurrency, "threads": args.threads,
            "rounds": args.rounds, "distinct": args.distinct,
            "span_processor": args.span_processor, "malloc_pinned": not args.malloc_default,
            "orders": [order_of(sides, i) for i in range(1, args.rounds + 1)],
            **summary,
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "wan26_async": wan.__version__,
        }))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        sys.exit(130)
