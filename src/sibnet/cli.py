"""The ``sibnet`` command: one subcommand per pipeline stage, plus ``dvc-yaml``.

Stage subcommands are built from :data:`sibnet.dag.STAGES`, so their options are exactly the
inputs and outputs the Snakemake rules and DVC stages pass::

    sibnet prepare  --params params.yaml --prepared data/prepared/phantom [--skip-invalid]
    sibnet train    --params params.yaml --prepared ... --checkpoint ... --history ...
                    --method baseline --seed 0
    sibnet evaluate --params params.yaml --prepared ... --checkpoint ... --metrics ...
                    --predictions ... --method baseline --seed 0
    sibnet robustness --params params.yaml --prepared ... --checkpoint ... --robustness ...
                    --predictions ... --method baseline --seed 0
    sibnet saliency --params params.yaml --prepared ... --checkpoint ... --saliency ...
                    --summary ... --examples ... --method baseline --seed 0
    sibnet segment  --params params.yaml --prepared ... --checkpoint ... --segmenters ...
                    --segmentation ... --summary ... --examples ... --method baseline --seed 0
    sibnet report   --params params.yaml --results results/phantom --models models/phantom
                    --report results/report --metrics results/metrics.json
                    --noise_plot results/plots/auc_vs_noise.csv
                    --saliency_plot results/plots/saliency.csv
    sibnet audit    --params params.yaml --prepared ... --models ... --results ...
                    --report results/report --metrics results/metrics.json
                    --noise_plot ... --saliency_plot ... --lineage results/audit
    sibnet audit --verify [--lineage results/audit] [--public-key PUB]
    sibnet audit --sign KEY [--lineage results/audit]
    sibnet audit --prov FILE.json|FILE.provn [--lineage results/audit]
    sibnet dvc-yaml [--check] [--output dvc.yaml]

The params file is validated before any work; errors print one clear message and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from sibnet.config import ParamsError, load_params, lookup
from sibnet.dag import STAGES, Stage, dvc_yaml, expand
from sibnet.errors import SibnetError
from sibnet.extensions import load_extensions
from sibnet.files import atomic_file

__all__ = ["main"]


def _add_stage(subparsers: argparse._SubParsersAction, spec: Stage) -> None:
    """The subcommand of ``spec``: its paths, ``--params``, its switches, ``--method/--seed``."""
    parser = subparsers.add_parser(spec.name, help=spec.help)
    # a switch that runs something else (`sibnet audit --verify`) needs none of the paths
    required = not any(option.runs for option in spec.options)
    parser.add_argument("--params", type=Path, required=required, help="params file")
    for option, template in spec.inputs.items():
        parser.add_argument(
            f"--{option}", type=Path, required=required, help=f"input, e.g. {template}"
        )
    for option, template in spec.outputs.items():
        parser.add_argument(
            f"--{option}", type=Path, required=required, help=f"output, e.g. {template}"
        )
    for switch in spec.options:
        if switch.metavar:
            parser.add_argument(switch.flag, type=Path, metavar=switch.metavar, help=switch.help)
        else:
            parser.add_argument(switch.flag, action="store_true", default=None, help=switch.help)
    if spec.per_method:
        parser.add_argument("--method", required=True, help="a method named in params.methods")
        parser.add_argument("--seed", type=int, required=True, help="training seed")
    parser.set_defaults(stage=spec)


def _stage_module(spec: Stage) -> ModuleType:
    """The module that runs ``spec`` (imported only now: each stage pays for its own imports,
    and :mod:`sibnet.imports` counts it as a root of the stage's code dependencies)."""
    return importlib.import_module(spec.module)


def _run_stage(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run one stage, then record its lineage (:mod:`sibnet.lineage`); the exit status.

    A stage with more than one data-parallel process (:attr:`~sibnet.dag.Stage.processes_key`,
    ``train.processes`` for ``train``) runs again under ``torchrun``
    (:func:`sibnet.launch.launch`), whose rank 0 records the lineage.
    """
    from sibnet import invocation
    from sibnet.launch import launch, needs_launch, rank_from_env
    from sibnet.lineage import now, output_files, write_record
    from sibnet.tracking import git_state, log_output_hashes

    spec: Stage = args.stage
    names = ("params", *spec.inputs, *spec.outputs)
    missing = [f"--{n}" for n in names if getattr(args, n) is None]
    if missing:
        raise ParamsError(f"sibnet {spec.name}: missing option(s) {' '.join(missing)}")
    params = load_params(args.params)
    kwargs = {name: getattr(args, name) for name in (*spec.inputs, *spec.outputs)}
    kwargs |= {o.keyword: getattr(args, o.dest) for o in spec.options if o.keyword}
    method, seed = (args.method, args.seed) if spec.per_method else (None, None)
    if spec.per_method:
        params.method(method)  # an unknown method fails before any work
        kwargs |= {"method": method, "seed": seed}
    processes = lookup(params, spec.processes_key) if spec.processes_key else 1
    if needs_launch(processes):
        threads = lookup(params, spec.threads_key) if spec.threads_key else 1
        return launch(argv, processes, threads)
    module = _stage_module(spec)
    started = now()
    getattr(module, spec.name)(params, **kwargs)
    ended = now()
    if rank_from_env() != 0:  # another data-parallel process: rank 0 records the run
        return 0
    keys = [expand(key, method=method or "") for key in spec.params]
    run_id = _last_run_id() if params.tracking.enabled else None
    record = write_record(
        stage=spec.name,
        dataset=params.prepare.dataset,
        method=method,
        seed=seed,
        argv=list(argv),
        params_file=args.params,
        params={key: lookup(params, key) for key in keys},
        inputs={name: getattr(args, name) for name in spec.inputs},
        outputs={name: getattr(args, name) for name in spec.outputs},
        code=git_state(),
        mlflow_run_id=run_id,
        invocation=invocation.current().record(),
        started=started,
        ended=ended,
    )
    if run_id is not None:  # the hashes again, in the tracking store (audit --verify)
        written = json.loads(record.read_text(encoding="utf-8"))
        log_output_hashes(run_id, written["job"], output_files(written))
    return 0


def _last_run_id() -> str | None:
    """The id of the MLflow run the stage just closed."""
    import mlflow

    run = mlflow.last_active_run()
    return None if run is None else run.info.run_id


def _dvc_yaml(args: argparse.Namespace) -> int:
    text = dvc_yaml()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `sibnet dvc-yaml`", file=sys.stderr)
            return 1
        return 0
    with atomic_file(args.output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sibnet`` command."""
    parser = argparse.ArgumentParser(
        prog="sibnet", description="Interpretability-guided (SIBnet) training pipeline stages."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    load_extensions()  # stages registered by extensions get their subcommands too
    for spec in STAGES.values():
        _add_stage(subparsers, spec)
    export = subparsers.add_parser("dvc-yaml", help="write dvc.yaml from the stage definitions")
    export.add_argument("--output", type=Path, default=Path("dvc.yaml"))
    export.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sibnet`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "dvc-yaml":
        return _dvc_yaml(args)
    from sibnet.launch import rank_from_env, under_torchrun

    rank = rank_from_env()  # data-parallel processes other than rank 0 log warnings only
    where = f"[rank {rank}] " if under_torchrun() else ""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        spec: Stage = args.stage
        runs = [o.flag for o in spec.options if o.runs and getattr(args, o.dest)]
        extra = [
            o.flag
            for o in spec.options
            if not o.runs and o.metavar and getattr(args, o.dest) is not None
        ]
        if extra and not runs:
            others = " / ".join(o.flag for o in spec.options if o.runs)
            raise ParamsError(f"sibnet {spec.name}: {' '.join(extra)} goes with {others}")
        if len(runs) > 1:
            raise ParamsError(f"sibnet {spec.name}: give one of {' / '.join(runs)}, not several")
        for switch in spec.options:
            if switch.runs and getattr(args, switch.dest):
                paths = {name: getattr(args, name) for name in (*spec.inputs, *spec.outputs)}
                values = {o.dest: getattr(args, o.dest) for o in spec.options}
                return getattr(_stage_module(spec), switch.runs)(**paths, **values)
        return _run_stage(args, argv)
    except SibnetError as error:
        print(f"sibnet {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
