"""Command line: ``python -m flatbook list | run | book | html`` (``train`` is ``flatbook.launch``).

    python -m flatbook list
    python -m flatbook run CHAPTER [-p NAME VALUE]... [-y YAML] [--profile ci|laptop|paper] [--output PATH]
    python -m flatbook book [--profile P] [--chapters NAME ...] [--no-html]
    python -m flatbook html
    python -m flatbook plan [CHAPTER ...] [--profile P] [-p NAME VALUE]... [--output configs.json] [--tflops R]

Values after ``-p`` are Python literals (``4``, ``1e-3``, ``"[0, 1e-4, 5e-4]"``, ``None``), else
YAML, else plain strings. ``-y`` takes YAML text or a YAML file of ``name: value`` pairs; ``-p``
wins over ``-y``, and both win over the profile.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from .parameters import ParameterError, format_parameters, load_yaml, parse_value

EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    from .registry import profile_names

    try:
        profiles = profile_names()
    except FileNotFoundError:
        profiles = ["ci", "laptop", "paper"]
    p = argparse.ArgumentParser(prog="python -m flatbook", description="Run the chapters of the flatbook book.",
                                epilog="python -m flatbook train CONFIG computes experiments from JSON configs, in one "
                                "process or under torchrun (see python -m flatbook train --help).")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("train", add_help=False,
                   help="compute experiment configs into the results cache (python -m flatbook train --help; "
                        "flatbook.launch, also under torchrun)")
    sub.add_parser("list", help="list the chapters with their parameters and profile overrides")

    run = sub.add_parser("run", help="execute one chapter with papermill")
    run.add_argument("chapter")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    run.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML",
                     help="YAML text or file of name: value pairs")
    run.add_argument("--profile", default="paper", choices=profiles,
                     help="parameter overrides from book/profiles/<profile>.yaml; 'paper' = notebook defaults")
    run.add_argument("--output", default=None, help="executed notebook path (default _build/executed/CHAPTER.ipynb)")
    run.add_argument("--log-output", action="store_true", help="echo the notebook's output while it runs")

    book = sub.add_parser("book", help="execute every chapter at a profile, then build the HTML book")
    book.add_argument("--profile", default="laptop", choices=profiles)
    book.add_argument("--chapters", nargs="+", default=None, metavar="NAME")
    book.add_argument("--no-html", action="store_true", help="execute only; do not run jupyter-book")

    sub.add_parser("html", help="build the HTML book from the notebooks already in _build/executed")

    plan = sub.add_parser("plan", help="the experiment configs chapters train at a profile, and their cost")
    plan.add_argument("chapters", nargs="*", metavar="CHAPTER", help="default: every chapter")
    plan.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    plan.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML")
    plan.add_argument("--profile", default="paper", choices=profiles)
    plan.add_argument("--output", default=None, help="write the configs as a JSON list (for python -m flatbook train)")
    plan.add_argument("--workers", type=int, default=None,
                      help="worker processes for the route (default: the profile's train_first_workers, else 1)")
    plan.add_argument("--nproc", type=int, default=None,
                      help="data-parallel ranks for the route (default: $FLATBOOK_NPROC, else 1)")
    plan.add_argument("--gpus", type=int, default=None, help="plan the route for this many GPUs (default: this machine's)")
    plan.add_argument("--tflops", type=float, default=None,
                      help="sustained rate for the time estimate, in TFLOP/s (default: an assumed 20)")
    return p


def _cmd_plan(args: argparse.Namespace) -> int:
    import json
    import os
    import tempfile

    from .plan import ASSUMED_TFLOPS, DEFAULT_TFLOPS, chapter_plan, plan_cost
    from .registry import chapters

    overrides = _overrides(args)
    if overrides and not args.chapters:
        raise ParameterError("-p and -y set one chapter's parameters: name the chapter(s) to plan")
    names = args.chapters or [c.name for c in chapters()]
    tflops = DEFAULT_TFLOPS if args.tflops is None else args.tflops
    planned: list = []
    print(f"{'chapter':<16} {'runs':>5} {'PFLOP':>10} {'hours':>8}   (PFLOP: convolutions and matrix products; "
          f"hours at sustained rates: CNN convolutions and products {tflops:g} TFLOP/s"
          f"{' (assumed)' if args.tflops is None else ''}, dense layers {ASSUMED_TFLOPS['dense']:g}, elementwise and "
          f"optimiser work {ASSUMED_TFLOPS['elementwise']:g} (assumed): an estimate until benchmarks/gpu_check.py "
          "measures them)", file=sys.stderr)
    for name in names:
        configs = chapter_plan(name, args.profile, overrides)
        cost = plan_cost(configs, tflops)
        print(f"{name:<16} {int(cost['runs']):>5} {cost['flops'] / 1e15:>10.3f} {cost['hours']:>8.3f}", file=sys.stderr)
        planned += configs
    from ..experiments import unique_configs

    everything = unique_configs(planned)
    distinct = plan_cost(everything, tflops)
    print(f"{'all chapters':<16} {int(distinct['runs']):>5} {distinct['flops'] / 1e15:>10.3f} {distinct['hours']:>8.3f}"
          f"   (distinct configs: a run shared by chapters is computed once)", file=sys.stderr)
    from ..experiments import default_nproc, describe_route
    from .registry import load_profile

    workers = args.workers if args.workers is not None else (load_profile(args.profile).train_first_workers or 1)
    nproc = args.nproc if args.nproc is not None else default_nproc()
    print(f"route: {describe_route(len(everything), workers=workers, nproc=nproc, gpus=args.gpus)}", file=sys.stderr)
    text = json.dumps([c.to_dict() for c in everything], indent=1)
    if args.output is None:
        print(text)
    else:
        out = os.path.abspath(args.output)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix=".plan.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
        print(f"wrote {len(everything)} configs to {args.output}", file=sys.stderr)
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {}
    for text in args.yaml:
        data = load_yaml(text)
        if not isinstance(data, dict):
            raise ParameterError(f"-y must give a mapping of name: value, got {data!r}")
        overrides.update(data)
    for name, value in args.parameter:
        overrides[name] = parse_value(value)
    return overrides


def _cmd_list() -> int:
    from .registry import chapters, load_profile, profile_names

    profiles = [load_profile(n) for n in profile_names()]
    for ch in chapters():
        print(f"{ch.name}: {ch.title}  ({ch.path})")
        print(format_parameters(ch.parameters))
        for prof in profiles:
            if prof.name != "paper":
                print(f"  profile {prof.name}: {prof.overrides.get(ch.name, 'MISSING')}")
        print()
    print("profiles: " + ", ".join(f"{p.name} ({p.description})" for p in profiles))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # the toolkit's command (python -m flatbook dispatches it before this module)
        from ..launch import main as train_main

        return train_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "run":
            from .runner import run_chapter

            rep = run_chapter(args.chapter, profile=args.profile, overrides=_overrides(args), output=args.output,
                              log_output=args.log_output)
            print(f"{rep.chapter}: executed in {rep.wall_seconds:.1f} s at profile {rep.profile!r} -> {rep.output}")
            return 0
        if args.command == "book":
            from .plan import train_first
            from .runner import run_book

            t0 = time.perf_counter()
            reports, failures = run_book(args.profile, args.chapters, train_first=train_first)
            if failures:
                print(f"\n{len(failures)} chapter(s) failed:", file=sys.stderr)
                for f in failures:
                    print(f"  - {f}", file=sys.stderr)
                print("HTML not built: fix the failures and run again (or `python -m flatbook html`).", file=sys.stderr)
                return EXIT_FAILED
            print(f"executed {len(reports)} chapter(s) in {time.perf_counter() - t0:.1f} s")
            if not args.no_html:
                from .site import build_html

                build_html()
            return 0
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "html":
            from .site import build_html

            build_html()
            return 0
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a failed chapter or build: one clear message, non-zero exit
        from .runner import ChapterFailed
        from .site import BuildFailed, MissingExecutedNotebook

        if isinstance(exc, (ChapterFailed, BuildFailed, MissingExecutedNotebook)):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise
    return EXIT_USAGE

