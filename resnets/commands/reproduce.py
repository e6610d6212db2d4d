"""``resnets reproduce``: reproduce one of the papers' experiments as figures, tables and a report.

``resnets reproduce EXPERIMENT [--budget smoke|cpu|paper] [--dataset D] [--data-dir DIR] [--output DIR]``
trains the experiment's runs (resumable run folders under OUTPUT/runs; finished runs are not redone),
analyses them and writes OUTPUT/EXPERIMENT/{results.json, report.md, *.png}. ``--list`` shows the
experiments; ``--plan`` prints the training runs an experiment would do, without doing them.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..experiments import BUDGETS, DEFAULT_BUDGET, get_experiment, list_experiments
from ..experiments.runner import DEFAULT_OUTPUT, ReproduceOptions, make_context, plan, reproduce
from ..experiments.zoo import plan_all, plan_lines, recipe_summary, reproduce_all
from ._common import check_output


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets reproduce --list | resnets reproduce identity-toy | "
        "resnets reproduce degradation --budget cpu | "
        "resnets reproduce depth --budget paper --data-dir ~/data/cifar10 --device cuda"
    )
    parser.add_argument(
        "experiment",
        nargs="?",
        metavar="EXPERIMENT",
        help=", ".join(experiment.name for experiment in list_experiments()),
    )
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every experiment, in the order that shares most runs; prints the plan with an estimated "
        "time first; run it again to resume",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the training runs (as resnets train commands) and exit without training",
    )
    parser.add_argument(
        "--budget",
        choices=tuple(BUDGETS),
        default=DEFAULT_BUDGET,
        help="smoke: seconds, checks the machinery; cpu (default): nets trained to convergence on "
        "Fashion-MNIST on a 2-core CPU (up to ~45 minutes an experiment); paper: the papers' schedules on "
        "CIFAR-10, for a GPU",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="seeds of each network whose comparison decides a verdict (default: the budget's, 2; a "
        "third is added where a deciding gap is within twice its standard error)",
    )
    parser.add_argument("--dataset", help="dataset (default: fashion-mnist, or cifar10 at --budget paper)")
    parser.add_argument("--data-dir", help="where the dataset lives")
    parser.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        default=None,
        help="folder for runs/ and the reports (default runs/reproduce); experiments that need "
        "the same network share its run when they share this folder",
    )
    parser.add_argument(
        "--device", help="auto (default: CUDA, else MPS, else the CPU), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="train every run for N iterations instead of the budget's (lr / 10 at 50%% and "
        "75%%), e.g. to fit a slower machine",
    )
    parser.add_argument(
        "--detection-data",
        metavar="DIR",
        help="detection at --budget paper: a Pascal VOC year folder or a COCO folder "
        "(default data/VOCdevkit/VOC2007)",
    )


def run(args: argparse.Namespace) -> int:
    if args.list:
        for experiment in list_experiments():
            print(f"{experiment.name:<18} {experiment.title}  [{experiment.paper}]")
        return 0
    if args.all and args.experiment:
        raise ConfigError(f"--all reproduces every experiment: drop {args.experiment!r} or --all")
    if not args.experiment and not args.all:
        names = ", ".join(e.name for e in list_experiments())
        raise ConfigError(f"name an experiment to reproduce ({names}), or use --all or --list")
    options = ReproduceOptions(
        budget=args.budget,
        dataset=args.dataset,
        data_dir=args.data_dir,
        output=args.output or DEFAULT_OUTPUT,
        device=args.device,
        iterations=args.iterations,
        detection_data=args.detection_data,
        seeds=args.seeds,
    )
    if args.all:
        if args.plan:
            planned = plan_all(options)
            for line in plan_lines(planned):
                print(f"# {line}")
            for _, ctx, specs in planned:
                for spec in specs:
                    print(spec.train_command(ctx.runs_dir / spec.name, ctx.data_dir))
            return 0
        check_output(options.output, "--output", folder=True, reads=[options.data_dir])  # before any work
        for paths in reproduce_all(options).values():
            print(paths["report"])
        return 0
    if args.plan:
        experiment = get_experiment(args.experiment)
        ctx = make_context(experiment, options)
        specs = plan(experiment, ctx)
        print(f"# {ctx.command}")
        for key, value in experiment.settings(ctx).items():
            print(f"# {key}: {value}")
        for line in recipe_summary(specs):
            print(f"# {line}")
        for spec in specs:
            print(spec.train_command(ctx.runs_dir / spec.name, ctx.data_dir))
        if not specs:
            print("# no training runs: the analysis runs by itself")
        return 0
    check_output(options.output, "--output", folder=True, reads=[options.data_dir])  # before any work
    print(reproduce(args.experiment, options)["report"])
    return 0
