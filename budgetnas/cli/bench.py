"""``budgetnas bench``: training speed per epoch on each device, and ``--baseline`` against a paper-style loop."""

from __future__ import annotations

import argparse

from budgetnas.choices import PRECISIONS
from budgetnas.cli._common import add_json_option, set_examples

HELP = "time training per epoch on each device (CPU, CUDA), or --baseline against a paper-style loop"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help=HELP, description=HELP + ". Epoch times are extrapolated from "
                                   "the median of N timed steps to the paper's 54,000 training images.")
    set_examples(parser,
                 'budgetnas bench cnn-100k fcn-100k',
                 'budgetnas bench --baseline --threads 1',
                 'budgetnas bench cnn-50k --devices cpu,cuda --steps 50 --json')
    parser.add_argument("configs", nargs="*", metavar="CONFIG",
                        help="configs (TOML paths or paper names; default: all paper configs, or cnn-100k "
                             "with --baseline)")
    parser.add_argument("--devices", default="cpu,cuda", metavar="LIST",
                        help="comma-separated devices to time (default cpu,cuda; missing ones are reported)")
    parser.add_argument("--steps", type=int, default=20, metavar="N", help="timed training steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3, metavar="W", help="untimed steps first (default 3)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16/mixed where the hardware has it natively, else fp32")
    parser.add_argument("--baseline", action="store_true",
                        help="compare the budgetnas trainer with a paper-style DataLoader/ToTensor/fp32 loop "
                             "(same model and steps, CPU, alternating repeats)")
    parser.add_argument("--repeats", type=int, default=3, metavar="R", help="--baseline repeats (default 3)")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="folder with datasets in torchvision's layout (default: $BUDGETNAS_DATA, else ./data)")
    parser.add_argument("--threads", type=int, default=None, metavar="T",
                        help="CPU threads for both loops (default: torch's, one per core)")
    parser.add_argument("--subset", type=int, default=None, metavar="N",
                        help="sample the timed batches from N images (quicker to load; same step)")
    add_json_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from budgetnas.cli._common import format_table, print_json, progress

    if args.baseline:
        return _baseline(args)
    from budgetnas.bench import bench
    from budgetnas.reproduce import format_duration

    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    report = bench(args.configs, devices=devices, steps=args.steps, warmup=args.warmup, precision=args.precision,
                   data_root=args.data_root, subset=args.subset, threads=args.threads,
                   progress=progress)
    if args.json:  # each note once: on stderr beside the JSON document, else after the table
        for note in report.notes:
            progress(f"note: {note}")
        print_json(report.to_dict())
        return 0
    rows = [{"model": r.name, "device": f"{r.device} ({r.precision})", "step": f"{r.step_seconds * 1000:.1f} ms",
             "ips": f"{r.images_per_second:,.0f}", "epoch": format_duration(r.epoch_seconds),
             "run": format_duration(r.run_seconds), "paper_cpu": format_duration(r.paper_cpu_seconds),
             "paper_gpu": format_duration(r.paper_gpu_seconds)} for r in report.rows]
    print(format_table(rows, [("model", "Model"), ("device", "Device"), ("step", "Step (median)"),
                              ("ips", "Images/s"), ("epoch", "Epoch (54k images)"), ("run", "20 epochs"),
                              ("paper_cpu", "Paper CPU-only"), ("paper_gpu", "Paper with GPU")]))
    for note in report.notes:
        print(f"Note: {note}.")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from budgetnas.bench import baseline_comparison
    from budgetnas.cli._common import print_json, progress
    from budgetnas.errors import UsageError

    if len(args.configs) > 1:
        raise UsageError("--baseline takes at most one config (default cnn-100k)")
    report = baseline_comparison(args.configs[0] if args.configs else "cnn-100k", steps=args.steps,
                                 repeats=args.repeats, precision=args.precision, data_root=args.data_root,
                                 threads=args.threads, progress=progress)
    if args.json:
        print_json(report.to_dict())
        return 0
    print(f"{report.name}: {report.steps} steps of batch {report.batch} on the CPU ({report.threads} threads), "
          f"median of {report.repeats} alternating repeats")
    print(f"  (a) paper-style loop (DataLoader + ToTensor, fp32, NCHW): "
          f"{report.baseline_images_per_second:,.0f} images/s")
    print(f"  (b) budgetnas trainer ({report.precision}):                 "
          f"{report.budgetnas_images_per_second:,.0f} images/s")
    print(f"  ratio b/a: {report.ratio:.2f}x wall time ({report.cpu_ratio:.2f}x per CPU-second)")
    return 0
