"""Command line: ``clt-gen``.

Thin: each subcommand parses into a config and calls one public function.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from clt_gen._version import __version__
from clt_gen.errors import ValidationError

__all__ = ["main", "build_parser", "train_config_from_args", "evaluate_config_from_args"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="clt-gen",
        description="Conjugate-learning-theory diagnostics for trained classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"clt-gen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_layers(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    _add_sweep(sub)
    _add_compare(sub)
    return parser


def _add_sweep(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a manifest of train + evaluate jobs (resumable)")
    p.add_argument("manifest", help="TOML manifest (see docs/sweeps.md)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--min-seeds",
        type=int,
        default=None,
        help="population check before training: every grid hyperparameter takes >= 2 "
        "values and every cell has this many seeds (random_state)",
    )
    p.set_defaults(func=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    import warnings

    from clt_gen.sweep import collect_failures, load_manifest, run_sweep

    manifest = load_manifest(args.manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are listed below
        records = run_sweep(
            manifest,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            progress=not args.no_progress,
            min_seeds=args.min_seeds,
        )
    out = manifest["sweep"]["out"]
    print(f"{len(records)} jobs finished in {out}")
    failures = collect_failures(out)
    for f in failures:
        print(
            f"FAILED {f['job_id']} in {f['stage']}: {f['error']} (grid point {f['grid_point']}; "
            f"traceback in {out}/jobs/{f['job_id']}/error.json)",
            file=sys.stderr,
        )
    if failures:
        print(f"{len(failures)} jobs failed; run the sweep again to retry them", file=sys.stderr)
        return 1
    return 0


def _add_compare(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare evaluation reports side by side")
    p.add_argument("runs", nargs="+", help="evaluation directories (with report.json)")
    p.add_argument("--out", default=None, help="write compare.png and compare.json here")
    p.add_argument(
        "--names", default=None, help="comma-separated labels, one per run (default: dir names)"
    )
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from clt_gen.compare import compare_reports

    names = args.names.split(",") if args.names else None
    table = compare_reports(args.runs, out=args.out, names=names)
    print(table)
    return 0


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained classifier: entropies, floor, checked bounds",
        description="Evaluate a checkpoint on the data it records, or any model (--model) on "
        "any data (--data). See docs/your-model.md.",
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="checkpoint directory or model file")
    p.add_argument("--out", required=True, help="output directory for report.{json,html}")
    p.add_argument(
        "--model",
        default=None,
        help="torchvision:NAME, timm:NAME or PKG.MODULE:FACTORY (imports and runs that module)",
    )
    p.add_argument("--weights", default=None, help="weights for --model (.safetensors or .pt)")
    p.add_argument(
        "--model-kwargs", default=None, type=_json_or_file, help="JSON keyword arguments"
    )
    p.add_argument(
        "--output",
        default=None,
        help="key (or integer index) of the class scores when the model returns a dict/tuple",
    )
    p.add_argument(
        "--data",
        default=None,
        help="built-in name, imagefolder:DIR, torchvision:NAME or npz:FILE "
        "(default: the checkpoint's dataset)",
    )
    p.add_argument("--data-dir", default=None, help="root of torchvision:NAME / built-in data")
    p.add_argument("--train-data", default=None, help="training data when --data is held-out only")
    p.add_argument("--transform", choices=["none", "normalize", "imagenet"], default="none")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--layers", nargs="+", default=None, help="layer names (see `clt-gen layers`)")
    p.add_argument("--omega", default=None, help="regularizer (default: the training loss)")
    p.add_argument("--method", default=None, help="entropy estimator (default: auto)")
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--reduce", choices=["project", "avgpool", "flatten"], default="project")
    p.add_argument("--max-features", type=int, default=128)
    p.add_argument("--n-bootstrap", type=int, default=200)
    p.add_argument("--max-train-samples", type=int, default=5_000)
    p.add_argument(
        "--heads",
        nargs="+",
        default=None,
        help="head families of the auto estimates and certified bounds "
        "(prior scores logistic gaussian knn mlp)",
    )
    p.add_argument(
        "--trainability",
        action="store_true",
        help="add gradient energy, structure-matrix spectra and the loss sandwich",
    )
    _add_pac_bayes_options(p)
    p.add_argument("--cache-dir", default=None, help="feature cache (default: OUT/.cache)")
    _add_model_file_options(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--random-state", "--seed", dest="random_state", type=int, default=0, help="seed"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="processes for the per-layer fits (default: all available cores; same numbers)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_evaluate)


def _add_pac_bayes_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output-kind",
        choices=["logits", "probs"],
        default="logits",
        help="what the model returns: logits (default) or probabilities (e.g. ends in Softmax)",
    )
    p.add_argument(
        "--pac-bayes",
        action="store_true",
        help="add PAC-Bayes certificates from the training data (the Gibbs network)",
    )
    p.add_argument(
        "--pac-bayes-prior",
        choices=["init", "zero"],
        default="init",
        help="prior mean: the recorded initialization w_0 (default) or zero",
    )
    p.add_argument("--pac-bayes-epochs", type=int, default=10, metavar="N")
    p.add_argument(
        "--pac-bayes-optimize-mean",
        action="store_true",
        help="let the posterior means move (certifies a different network; the report says so)",
    )


def _add_model_file_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arch-spec",
        default=None,
        type=_json_or_file,
        help="for a bare state-dict file: JSON (or a JSON file) with arch, "
        "input_shape, n_classes and arch_kwargs",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading a fully pickled model, which can run code stored in "
        "the file: only for files you created yourself",
    )
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="load a checkpoint whose meta.json records no weights hash (the report "
        "records weights_verified: false)",
    )


def _json_or_file(text: str) -> Any:
    import pathlib

    p = pathlib.Path(text)
    try:
        return json.loads(p.read_text() if p.is_file() else text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None


def evaluate_config_from_args(args: argparse.Namespace) -> Any:
    """Return the :class:`~clt_gen.evaluation.EvaluateConfig` an ``evaluate`` command describes."""
    from clt_gen.evaluation import EvaluateConfig
    from estimators import DEFAULT_METHOD

    return EvaluateConfig(
        checkpoint=args.checkpoint,
        out=args.out,
        data=args.data,
        data_dir=args.data_dir,
        layers=tuple(args.layers) if args.layers else None,
        omega=args.omega,
        method=args.method or DEFAULT_METHOD,
        delta=args.delta,
        reduce=args.reduce,
        max_features=args.max_features,
        n_bootstrap=args.n_bootstrap,
        max_train_samples=args.max_train_samples,
        heads=tuple(args.heads) if args.heads else EvaluateConfig.heads,
        trainability=args.trainability,
        cache_dir=args.cache_dir,
        arch_spec=args.arch_spec,
        trust_pickle=args.trust_pickle,
        allow_unverified=getattr(args, "allow_unverified", False),
        device=args.device,
        random_state=args.random_state,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        n_jobs=args.jobs,
        output_kind=args.output_kind,
        pac_bayes=args.pac_bayes,
        pac_bayes_prior=args.pac_bayes_prior,
        pac_bayes_epochs=args.pac_bayes_epochs,
        pac_bayes_optimize_mean=args.pac_bayes_optimize_mean,
    )


def _output_arg(text: str | None) -> str | int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def _run_evaluate(args: argparse.Namespace) -> int:
    from clt_gen.evaluation import check_outputs, evaluate

    cfg = evaluate_config_from_args(args)
    check_outputs(cfg)  # before loading anything: a bad --out costs no run
    byom = args.model is not None or (args.data is not None and ":" in args.data)
    if not byom:
        if args.checkpoint is None:
            raise ValidationError(
                "evaluate needs a CHECKPOINT, or --model SPEC with --data SPEC "
                "(see `clt-gen evaluate --help`)"
            )
        report = evaluate(cfg, output=_output_arg(args.output))
    else:
        report = _evaluate_byom(args, cfg)
    print(report.table())
    print(
        f"wrote {args.out}/report.json and {args.out}/report.html ({report.timings['total']:.1f}s)"
    )
    return 0


def _evaluate_byom(args: argparse.Namespace, cfg: Any) -> Any:
    import dataclasses

    from clt_gen.evaluation import evaluate
    from clt_gen.loading import data_from_spec, model_from_spec

    if args.model is not None and args.checkpoint is not None:
        raise ValidationError("pass either a CHECKPOINT or --model, not both")
    if args.data is None:
        raise ValidationError("--model needs --data (imagefolder:DIR, torchvision:NAME, npz:FILE)")
    if args.model is not None:
        model: Any = model_from_spec(args.model, kwargs=args.model_kwargs, weights=args.weights)
    elif args.weights is not None:
        raise ValidationError("--weights goes with --model (a checkpoint carries its weights)")
    else:
        model = args.checkpoint
    train, test, name = data_from_spec(
        args.data, data_dir=args.data_dir, transform=args.transform, train_data=args.train_data
    )
    options = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name
        not in (
            "checkpoint",
            "data",
            "data_dir",
            "layers",
            "omega",
            "delta",
            "random_state",
            "device",
        )
    }
    return evaluate(
        model,
        train,
        test,
        layers=cfg.layers,
        output=_output_arg(args.output),
        omega=cfg.omega,
        delta=cfg.delta,
        random_state=cfg.random_state,
        device=cfg.device,
        data_name=name,
        **options,
    )


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train a small network on embedded digits and evaluate it")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from clt_gen.demo import run_demo

    report = run_demo(args.out, progress=not args.no_progress)
    print(report.table())
    print()
    for line in report.summary_lines:
        print("- " + line)
    print(f"\nwrote {args.out}/report.json and {args.out}/report.html")
    return 0


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a network and save a safe checkpoint directory")
    p.add_argument("--arch", default="lenet", help="architecture name (see `clt-gen layers`)")
    p.add_argument(
        "--arch-kwargs",
        default="{}",
        type=json.loads,
        help='architecture options as JSON, e.g. \'{"k": 3, "w": 64}\'',
    )
    p.add_argument("--data", default="digits", help="dataset name")
    p.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--omega", default="shannon", help="training loss (regularizer name)")
    p.add_argument("--alpha", type=float, default=1.5, help="Tsallis alpha (omega=tsallis)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE")
    p.add_argument("--random-labels", type=float, default=0.0, metavar="FRAC")
    p.add_argument("--label-noise", type=float, default=0.0, metavar="FRAC")
    p.add_argument(
        "--duplicate-fraction",
        type=float,
        default=0.0,
        metavar="FRAC",
        help="duplicate this fraction of inputs with conflicting labels",
    )
    p.add_argument("--quantize-levels", type=int, default=None)
    p.add_argument("--subset", type=int, default=None, metavar="N")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--check-fraction", type=float, default=0.5)
    p.add_argument(
        "--two-phase",
        type=float,
        default=None,
        metavar="ALPHA",
        help="train on fraction ALPHA, then retrain only the last layer on all",
    )
    p.add_argument(
        "--pac-bayes-prior",
        type=float,
        default=None,
        metavar="FRACTION",
        help="train a data-dependent PAC-Bayes prior on this fraction of the training rows, "
        "then the Gaussian posterior on the rest (f_quad); the checkpoint records both",
    )
    p.add_argument("--pac-bayes-sigma", type=float, default=0.03, help="prior std (fixed)")
    p.add_argument(
        "--pac-bayes-epochs", type=int, default=None, help="posterior epochs (default --epochs)"
    )
    p.add_argument(
        "--probe-every",
        type=int,
        default=0,
        metavar="N",
        help="record trainability probe metrics every N steps",
    )
    p.add_argument(
        "--random-state", "--seed", dest="random_state", type=int, default=0, help="seed"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_train)


def train_config_from_args(args: argparse.Namespace) -> Any:
    """Return the :class:`~clt_gen.training.TrainConfig` a ``train`` command line describes."""
    from clt_gen.data import DataConfig
    from clt_gen.training import TrainConfig

    data = DataConfig(
        subset=args.subset,
        random_labels=args.random_labels,
        label_noise=args.label_noise,
        duplicate_fraction=args.duplicate_fraction,
        quantize_levels=args.quantize_levels,
        val_fraction=args.val_fraction,
        check_fraction=args.check_fraction,
        random_state=args.random_state,
    )
    return TrainConfig(
        arch=args.arch,
        arch_kwargs=args.arch_kwargs,
        dataset=args.data,
        data_dir=args.data_dir,
        data=data,
        omega=args.omega,
        alpha=args.alpha,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        schedule=args.schedule,
        early_stopping=args.early_stopping,
        two_phase=args.two_phase,
        random_state=args.random_state,
        device=args.device,
        probe_every=args.probe_every,
        progress=not args.no_progress,
        pac_bayes_prior=args.pac_bayes_prior,
        pac_bayes_sigma=args.pac_bayes_sigma,
        pac_bayes_epochs=args.pac_bayes_epochs,
    )


def _run_train(args: argparse.Namespace) -> int:
    from clt_gen.training import train

    result = train(train_config_from_args(args), args.out)
    m = result.metrics
    print(
        f"saved {result.path}  train_acc={m['train_accuracy']:.4f}  "
        f"check_acc={m['check_accuracy']:.4f}  ({m['train_seconds']:.1f}s)"
    )
    pb = result.meta.get("pac_bayes")
    if pb:
        print(
            f"PAC-Bayes (prior on {pb['n_prior_rows']} rows, bound on {pb['n_bound_rows']}): "
            f"Gibbs error <= {pb['values']['error']:.4f} with probability >= "
            f"{1 - pb['delta']:.2f}; Gibbs check error {pb['check']['gibbs_error']:.4f}"
        )
    return 0


def _add_layers(sub: Any) -> None:
    p = sub.add_parser("layers", help="list the named layers of a checkpoint")
    p.add_argument("checkpoint", help="checkpoint directory (or a model file, see below)")
    p.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        default=None,
        help="input shape, for a model file without metadata (e.g. 1 28 28)",
    )
    _add_model_file_options(p)
    p.set_defaults(func=_run_layers)


def _run_layers(args: argparse.Namespace) -> int:
    from clt_gen.checkpoints import load_checkpoint
    from clt_gen.features import default_layers, list_layers

    ck = load_checkpoint(
        args.checkpoint,
        arch=args.arch_spec,
        trust_pickle=args.trust_pickle,
        allow_unverified=getattr(args, "allow_unverified", False),
    )
    shape = args.input_shape or ck.meta.get("input_shape")
    if shape is None:
        raise ValidationError("this model file has no metadata: pass --input-shape, e.g. 1 28 28")
    default = set(default_layers(ck.model, shape))
    print(f"{'layer':<32} {'type':<22} {'output shape':<18} {'params':>9}  default")
    for info in list_layers(ck.model, shape):
        mark = "*" if info.name in default else ""
        print(
            f"{'  ' * (info.depth - 1) + info.name:<32} {info.kind:<22} "
            f"{str(info.output_shape):<18} {info.n_params:>9}  {mark}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clt-gen`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        print(f"clt-gen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
