"""The `digits` command: parses arguments, calls the library, prints the result."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

from . import __version__
from .errors import DigitsError
from .mnist import DIGIT_CLASSES


def cmd_train(args: argparse.Namespace) -> None:
    from . import distributed
    from .training import TrainConfig, train, train_ensemble

    config = TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, normalize=args.normalize,
                         seed=args.seed, out=args.out, data_dir=args.data_dir, device=args.device,
                         threads=args.threads, resume=args.resume, subset=args.subset,
                         report=args.report, tensorboard=args.tensorboard, holdout=args.holdout,
                         precision=args.precision, compile=args.compile,
                         target_accuracy=args.target_accuracy, time_limit=args.time_limit)
    under_torchrun = "WORLD_SIZE" in os.environ
    if args.ensemble is None and args.nproc not in (None, 1) and not under_torchrun:
        return distributed_train(args)
    with distributed.failures_reported():
        if args.ensemble is not None:  # --nproc N: N members at a time, each in its own process
            train_ensemble(config, args.ensemble, processes=1 if under_torchrun else args.nproc)
        else:
            train(config)
    distributed.finish()


def distributed_train(args: argparse.Namespace) -> None:
    """`digits train --nproc N ...` is `torchrun --nproc_per_node=N -m digits train ...`."""
    from . import distributed
    from .engine import resolve_device
    from .training import DEFAULTS, default_run_dir

    argv = args.argv[args.argv.index("train") + 1:]  # workers see WORLD_SIZE and ignore --nproc
    out = args.out
    if out is None and not args.resume:  # every rank must write to the same folder
        out = default_run_dir(args.model or DEFAULTS["model"])
        argv += ["--out", str(out)]
    distributed.launch(args.nproc, argv, resolve_device(args.device), out and Path(out))


def cmd_baselines(args: argparse.Namespace) -> None:
    from .baselines import run_baselines
    from .data import load_dataset

    results = run_baselines(load_dataset(args.dataset, args.data_dir), args.only, args.subset)
    if args.json:
        print(json.dumps(results))
        return
    _print_table("Baselines (scikit-learn)", results, {
        "baseline": ("baseline", str), "description": ("what", str), "train_images": ("images", "{:,}".format),
        "accuracy": ("accuracy", "{:.2%}".format), "fit_seconds": ("fit", "{:.1f} s".format),
        "predict_images_per_s": ("predict", "{:,.0f}/s".format)})


def cmd_benchmark(args: argparse.Namespace) -> None:
    from .benchmark import PEAK_SIZE, benchmark
    from .data import load_dataset

    if args.profile:
        return cmd_profile(args)
    out = args.out or "benchmark.json"
    result = benchmark(load_dataset(args.dataset, args.data_dir), tuple(args.models), args.epochs,
                       args.keras, args.precision, args.device, args.subset, args.threads, out)
    seconds = _or_dash("{:.1f} s")
    _print_table(f"{result['dataset']} ({result['train_images']:,} training images), {result['device']}, "
                 f"{_count(result['threads'], 'thread')}", result["rows"], {
        "model": ("model", str), "precision": ("precision", str), "epochs": ("epochs", str),
        "seconds_per_epoch": ("s/epoch", seconds), "train_images_per_s": ("train img/s", "{:,.0f}".format),
        "train_mflop_per_image": ("MFLOP/img", "{:.1f}".format), "train_gflops": ("GFLOP/s", "{:.0f}".format),
        "share_of_peak": ("of peak", "{:.0%}".format),
        "time_to_99.0%": ("to 99.0%", seconds), "time_to_99.5%": ("to 99.5%", seconds),
        "accuracy": ("accuracy", "{:.2%}".format), "inference_images_per_s": ("infer img/s", "{:,.0f}".format)})
    print("peak (a {0}×{0} matrix product): ".format(PEAK_SIZE)
          + ", ".join(f"{gflops:,.0f} GFLOP/s in {p}" for p, gflops in result["peak_gflops"].items()))
    if "seed_to_keras_epoch_ratio" in result:
        print(f"seed epoch time / Keras tutorial epoch time: {result['seed_to_keras_epoch_ratio']:.2f}")
    print(f"wrote {out}")


def cmd_profile(args: argparse.Namespace) -> None:
    """`digits benchmark --profile`: where each model's training step spends its time."""
    from .benchmark import profile
    from .data import load_dataset

    if args.epochs is not None:
        raise DigitsError(f"--epochs {args.epochs}: --profile always times one epoch; leave --epochs out")
    out = args.out or "profile.json"  # not benchmark.json, which holds the benchmark's own results
    for p in profile(load_dataset(args.dataset, args.data_dir), tuple(args.models), args.subset, args.precision,
                     args.device, args.threads, out):
        _print_table(f"{p['model']}: a training step of {p['batch_size']} images, {p['precision']}, "
                     f"{_count(p['threads'], 'thread')} — {p['ms_per_step']:.1f} ms (mean of {p['steps']} steps), "
                     f"{p['gflops']:.0f} GFLOP/s, {p['share_of_peak']:.0%} of a {p['peak_gflops']:.0f} GFLOP/s peak",
                     p["parts"], {
            "part": ("part", str), "ms_per_step": ("ms/step", "{:.2f}".format), "share": ("share", "{:.0%}".format),
            "gflops": ("GFLOP/s", _or_dash("{:.0f}")), "share_of_peak": ("of peak", _or_dash("{:.0%}"))})
    print(f"wrote {out}")


def _or_dash(form: str) -> Callable[[float | None], str]:
    """A table cell's formatter for a figure that may be missing (None), shown as —."""
    return lambda value: "—" if value is None else form.format(value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _print_table(title: str, rows: list[dict], columns: dict) -> None:
    """Rows as a table; ``columns`` maps each row key to its (header, formatter). Text may wrap
    between words; figures and their headers never do: the table widens past 120 columns instead."""
    from rich.console import Console
    from rich.table import Table

    cells = [[show(row[key]) for key, (_, show) in columns.items()] for row in rows]
    table = Table(title=title)
    for i, (header, show) in enumerate(columns.values()):
        texts = [header, *(row[i] for row in cells)]
        unbroken = [word for text in texts for word in text.split()] if show is str else texts
        table.add_column(header, justify="left" if show is str else "right", no_wrap=show is not str,
                         min_width=max(map(len, unbroken)))
    for row in cells:
        table.add_row(*row)
    console = Console(highlight=False)
    console.width = max(console.width, 120)
    console.print(table, crop=False)  # columns never narrower than their figures: wider tables overflow whole


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.out, args.device)
    if args.json:
        print(json.dumps(result))
        return
    per_class = result["per_class"]
    rows = [{"class": name, **{k: per_class[k][i] for k in per_class}} for i, name in enumerate(result["classes"])]
    score = "{:.4f}".format
    _print_table(f"{result['model']} on {result['dataset']} test set ({result['count']:,} images)", rows, {
        "class": ("class", str), "precision": ("precision", score), "recall": ("recall", score),
        "f1": ("f1", score), "support": ("support", "{:,}".format)})
    print(f"accuracy {result['accuracy']:.4f} — loss {result['loss']:.4f}")
    print(f"wrote {result['files']['confusion']} and {result['files']['mistakes']}")


def cmd_ensemble(args: argparse.Namespace) -> None:
    from .evaluation import combine

    result = combine(args.models, args.out, args.dataset, args.data_dir, args.device)
    print(f"{result['model']}: {result['dataset']} test accuracy {result['accuracy']:.2%}"
          f" — wrote {result['checkpoint']}")


def cmd_models(args: argparse.Namespace) -> None:
    from .models import count_parameters, create_model, list_models

    def recipe(r) -> str:
        return (f"{r.optimizer} lr {r.lr:g}, batch {r.batch_size}, {_count(r.epochs, 'epoch')}"
                f"{', ' + r.schedule if r.schedule != 'constant' else ''}"
                f"{', augmented' if r.augment else ''}{', test-time augmented' if r.test_time_augment else ''}"
                f"{f', read at temperature {r.temperature:g}' if r.temperature != 1 else ''}"
                f", {'normalized' if r.normalize else 'raw 0–255'} input")

    rows = [{"name": e.name, "parameters": count_parameters(create_model(e.name)), "recipe": recipe(e.recipe),
             "description": e.description} for e in list_models()]
    _print_table("Model zoo", rows, {"name": ("name", str), "parameters": ("parameters", "{:,}".format),
                                     "recipe": ("recipe", str), "description": ("description", str)})


def cmd_data(args: argparse.Namespace) -> None:
    from .data import DATASETS, describe

    names = [args.dataset] if args.dataset else list(DATASETS)
    results = [describe(name, args.data_dir, args.verify) for name in names]
    if args.json:
        print(json.dumps(results))
        return
    for info in results:
        print(f"{info['dataset']}: {info['status']}" + (f" in {info['folder']}" if info["folder"] else f" — {info['message']}"))
        for file, digest in info.get("checksums", {}).items():
            print(f"  {file}  sha256 {digest}{' (decompressed)' if file.endswith('.gz') else ''}")


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        from .service import serve
    except ImportError as e:
        raise DigitsError(f"digits serve needs the server packages ({e.name} is missing):"
                          " pip install 'digits[serve]'") from None
    serve(args.model, args.host, args.port, args.workers, args.backend, args.max_batch)


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import load, predict_files

    classifier = load(args.model, args.backend, args.device, args.precision)
    records = predict_files(classifier, args.paths, args.number, args.show_preprocessed)
    table, failed, preprocessed = [], 0, 0
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file", "number", "confidence", "confidences"] if args.number
                        else ["file", "digit", "confidence", *(f"p{d}" for d in range(10))])
    for record in records:
        preprocessed += len(record.get("preprocessed", ()))
        if "error" in record:
            failed += 1
            print(f"digits: error: {record['error']}", file=sys.stderr, flush=True)
        elif args.json:
            print(json.dumps(record), flush=True)
        elif args.csv and args.number:
            writer.writerow([record["file"], record["number"], record["confidence"],
                             " ".join(map(str, record["confidences"]))])
        elif args.csv:
            writer.writerow([record["file"], record["digit"], record["confidence"], *record["probabilities"]])
        else:
            table.append(record)
    if table:
        _print_predictions(table, classifier.info, args.number)
        for record in table:
            if "looks_like_digits" in record:
                print(f"{record['file']} looks like {record['looks_like_digits']} digits: read it as a number "
                      "with --number")
    if args.show_preprocessed is not None:  # beside JSON or CSV on standard output, said on standard error
        print(f"wrote what the model saw to {args.show_preprocessed}: {preprocessed} "
              f"file{'s' * (preprocessed != 1)}", file=sys.stderr if args.json or args.csv else sys.stdout)
    return 2 if failed else 0


def _print_predictions(records: list[dict], info: dict, number: bool) -> None:
    percent = "{:.1%}".format
    if number:
        columns = {"file": ("file", str), "number": ("number", "{}".format), "confidence": ("confidence", percent),
                   "confidences": ("each digit", lambda cs: " · ".join(map(percent, cs)))}
    else:
        named = tuple(info["classes"]) != DIGIT_CLASSES  # Fashion-MNIST's classes have names
        columns = {"file": ("file", str), "class": ("class", str) if named else ("digit", "{}".format),  # a figure
                   "confidence": ("confidence", percent),
                   "top3": ("top-3", lambda top: " · ".join(f"{t['class']} {t['probability']:.1%}" for t in top))}
    _print_table(f"{info['name']} ({info['backend']} {info['precision']}, {info['source']})", records, columns)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_onnx

    result = export_onnx(args.checkpoint, args.onnx)
    print(f"wrote {result['onnx']} (ONNX opset {result['opset']}, any batch size); largest difference "
          f"from PyTorch {result['max_difference']:.1e} in probability")


def cmd_report(args: argparse.Namespace) -> None:
    from .report import write_report

    print(f"wrote {write_report(args.run_dir, args.out, data_dir=args.data_dir, device=args.device)}")


def cmd_explain(args: argparse.Namespace) -> None:
    from .explain import explain_picture

    result = explain_picture(args.image, args.model, args.out)
    print(f"{result['file']}: {result['class']} ({result['confidence']:.1%}) — top 3: "
          + " · ".join(f"{t['class']} {t['probability']:.1%}" for t in result["top3"]))
    print(f"wrote {result['picture']}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .report import compare_runs

    rows = compare_runs(args.run_dirs, args.out)
    _print_table("Runs compared (accuracy and loss: validation at the last epoch)", rows, {
        "run": ("run", str), "model": ("model", str), "dataset": ("dataset", str),
        "validation": ("validated on", str), "epochs": ("epochs", "{}".format),
        "accuracy": ("accuracy", "{:.2%}".format), "loss": ("loss", "{:.4f}".format),
        "seconds": ("training time", "{:.1f} s".format), "parameters": ("parameters", "{:,}".format)})
    print(f"wrote {args.out}")


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"digits: error: {message} — see `{self.prog} --help`\n")

    def parse_args(self, args: list[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        # argparse finds a misspelt option only once the command has parsed, so its own error
        # would point at `digits --help`, which lists the commands, not the command's options.
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            words = list(sys.argv[1:] if args is None else args)
            name = getattr(parsed, "command", None)
            # An option before the command is one of digits' own: --help lists those.
            own = name not in words or unknown[0] in words[:words.index(name)]
            command = self.prog if own else f"{self.prog} {name}"
            self.exit(2, f"digits: error: unrecognized arguments: {' '.join(unknown)} — see `{command} --help`\n")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="digits", description="Train, evaluate and serve handwritten-digit classifiers.")
    parser.add_argument("--version", action="version", version=f"digits {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_options(p: argparse.ArgumentParser, dataset_default: str | None = "mnist") -> None:
        p.add_argument("--dataset", default=dataset_default, help="mnist, fashion-mnist, or another MNIST-format set with --data-dir")
        p.add_argument("--data-dir", help="folder holding the dataset's four IDX files")

    p = commands.add_parser("train", help="train a model from the zoo")
    p.add_argument("--model", help="zoo model (see `digits models`; default: seed, or with --resume the run's own)")
    data_options(p, dataset_default=None)  # mnist, or with --resume the run's own
    p.add_argument("--epochs", type=int, help="default: the model's recipe")
    p.add_argument("--batch-size", type=int, help="default: the model's recipe")
    p.add_argument("--lr", type=float, help="learning rate; default: the model's recipe")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="scale pixels to mean 0, std 1 (default: the recipe's; seed feeds raw 0–255)")
    p.add_argument("--seed", type=int, help="random seed, 0 to 4294967295 (default: 0, or with --resume the run's own)")
    p.add_argument("--subset", type=int, help="train on the first N training images only")
    p.add_argument("--out", help="run folder (default runs/<model>-<timestamp>)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the newest run, of --model if given)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N local processes with DistributedDataParallel (as torchrun does);"
                        " with --ensemble, train N members at a time (default: one per GPU)")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip report.html at the end")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="also log to TensorBoard in DIR (pip install 'digits[tensorboard]')")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 mixed precision where the CPU or GPU computes bf16 natively, else fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    p.add_argument("--target-accuracy", type=float, metavar="A",
                   help="stop after the first epoch whose validation accuracy reaches A (e.g. 0.99)")
    p.add_argument("--time-limit", type=float, metavar="S", help="stop once training has taken S seconds")
    p.add_argument("--holdout", type=int, metavar="N",
                   help="validate on the last N training images instead of the test set (for tuning)")
    p.add_argument("--ensemble", type=int, metavar="K",
                   help="train K members with seeds SEED…SEED+K-1 into OUT/member-k and average them")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("baselines", help="scikit-learn classifiers on the same data, for comparison")
    data_options(p)
    p.add_argument("--only", nargs="+", metavar="NAME", help="logistic, knn, svc, forest (default: all)")
    p.add_argument("--subset", type=int, help="fit on the first N training images only (SVC takes minutes on all)")
    p.add_argument("--json", action="store_true", help="print one JSON list, an object per baseline")
    p.set_defaults(run=cmd_baselines)

    p = commands.add_parser("benchmark", help="training and inference speed and accuracy of zoo models")
    data_options(p)
    p.add_argument("--models", nargs="+", default=["seed", "fast"], metavar="NAME", help="default: seed fast")
    p.add_argument("--epochs", type=int, help="train every model this many epochs (default: each recipe's)")
    p.add_argument("--subset", type=int, help="train on the first N training images only (a quicker speed measure)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (Keras keeps its own default)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-keras", dest="keras", action="store_false",
                   help="skip the Keras tutorial's model (run only when TensorFlow and Keras are installed)")
    p.add_argument("--profile", action="store_true",
                   help="instead, show where a training step's time goes in one epoch, per kind of layer (CPU)")
    p.add_argument("--out", help="where to write the results as JSON (default: benchmark.json; "
                                 "profile.json with --profile)")
    p.set_defaults(run=cmd_benchmark)

    p = commands.add_parser("evaluate", help="test-set metrics, confusion matrix and mistakes of a checkpoint")
    p.add_argument("checkpoint")
    data_options(p, dataset_default=None)
    p.add_argument("--out", help="folder for confusion.png and mistakes.png (default: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("ensemble", help="combine trained models into one that averages their probabilities")
    p.add_argument("models", nargs="+", metavar="MODEL", help="run folders, checkpoints or ensembles (their members join)")
    p.add_argument("--out", required=True, help="new folder for the ensemble's ensemble.json")
    data_options(p, dataset_default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(run=cmd_ensemble)

    p = commands.add_parser("models", help="list the model zoo")
    p.set_defaults(run=cmd_models)

    p = commands.add_parser("data", help="where each dataset is, and its checksums")
    data_options(p, dataset_default=None)
    p.add_argument("--verify", action="store_true", help="read every file and check its sha256")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_data)

    p = commands.add_parser("serve", help="HTTP service and drawing page: draw a digit, watch the model read it")
    p.add_argument("--model", help="checkpoint (.pt) or ONNX file "
                                   "(default: $DIGITS_MODEL, else the newest finished run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"))
    p.add_argument("--max-batch", type=int, default=64,
                   help="most images in one forward pass when requests are batched together (1: no batching)")
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("predict", help="read digits (or numbers) in pictures: files, folders or globs")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a picture, a folder of pictures or a glob")
    p.add_argument("--model", help="checkpoint (.pt) or ONNX file "
                                   "(default: $DIGITS_MODEL, else the newest finished run)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"),
                   help="onnx with a checkpoint uses the .onnx file `digits export` wrote beside it")
    p.add_argument("--number", action="store_true", help="each picture is a number of several digits")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per line per picture")
    output.add_argument("--csv", action="store_true", help="CSV with a header line")
    p.add_argument("--show-preprocessed", metavar="DIR", help="write the 28×28 images the model saw into DIR")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="PyTorch backend: auto is bf16 where the hardware computes it natively, else fp32")
    p.set_defaults(run=cmd_predict)

    p = commands.add_parser("export", help="export a checkpoint to ONNX, for ONNX Runtime")
    p.add_argument("checkpoint")
    p.add_argument("--onnx", metavar="FILE", help="where to write it (default: beside the checkpoint, as .onnx)")
    p.set_defaults(run=cmd_export)

    p = commands.add_parser("report", help="a self-contained HTML page on a run: curves, metrics, what it learned")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="where to write it (default RUN_DIR/report.html)")
    p.add_argument("--data-dir", help="folder holding the dataset's four IDX files")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(run=cmd_report)

    p = commands.add_parser("explain", help="predict a picture and draw which pixels the prediction rests on")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--model", help="checkpoint (.pt) (default: $DIGITS_MODEL, else the newest finished run)")
    p.add_argument("--out", help="picture to write (default IMAGE-explained.png beside IMAGE)")
    p.set_defaults(run=cmd_explain)

    p = commands.add_parser("compare", help="a table and a figure comparing runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="compare.png", help="figure of the curves overlaid (default compare.png)")
    p.set_defaults(run=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = args.run(args)
    except DigitsError as e:
        return _refuse(str(e))
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != "torch":
            raise
        print(f"digits: error: digits {args.command} needs PyTorch, which is not installed here (without it, "
              "digits predicts and serves from ONNX exports) — pip install torch", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _speaks_for_the_run():
            print("digits: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`digits predict … | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a path the system refused: a file where a folder must be, no permission, a full disk
        where = f"{e.filename}: " if e.filename else ""
        return _refuse(f"{where}{e.strerror or e} — check the path, or choose another")
    return status or 0  # a command that went on past bad inputs says so in its status


def _refuse(reason: str) -> int:
    """One line on standard error, and status 2. The ranks `--nproc` started hand the line to
    their parent instead, which says it once for them all."""
    if "RANK" in os.environ:
        from .distributed import hand_to_launcher

        if hand_to_launcher(reason):
            return 2
    print(f"digits: error: {reason}", file=sys.stderr)
    return 2


def _speaks_for_the_run() -> bool:
    """Of a distributed run's processes, one says it was interrupted: `--nproc`'s parent, which
    launched the ranks, or under torchrun rank 0."""
    rank = os.environ.get("RANK")
    if rank is None:
        return True
    from .distributed import LAUNCHED

    return rank == "0" and LAUNCHED not in os.environ


if __name__ == "__main__":
    sys.exit(main())
