"""The `digits` command: parses arguments, calls the library, prints the result."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import DigitsError


def cmd_train(args: argparse.Namespace) -> None:
    from .training import TrainConfig, train

    train(TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, normalize=args.normalize,
                      seed=args.seed, out=args.out, data_dir=args.data_dir, device=args.device,
                      threads=args.threads, resume=args.resume, subset=args.subset))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.out, args.device)
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} on {result['dataset']} test set ({result['count']:,} images)")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="right")
    per_class = result["per_class"]
    for i, name in enumerate(result["classes"]):
        table.add_row(name, *(f"{per_class[k][i]:.4f}" for k in ("precision", "recall", "f1")),
                      str(per_class["support"][i]))
    console = Console(highlight=False)
    console.print(table)
    console.print(f"accuracy {result['accuracy']:.4f} — loss {result['loss']:.4f}")
    console.print(f"wrote {result['files']['confusion']} and {result['files']['mistakes']}")


def cmd_models(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from .models import count_parameters, create_model, list_models

    table = Table(title="Model zoo")
    for column in ("name", "parameters", "recipe", "description"):
        table.add_column(column)
    for entry in list_models():
        r = entry.recipe
        recipe = (f"{r.optimizer} lr {r.lr:g}, batch {r.batch_size}, {r.epochs} epochs"
                  f"{', ' + r.schedule if r.schedule != 'constant' else ''}"
                  f"{', augmented' if r.augment else ''}, {'normalized' if r.normalize else 'raw 0–255'} input")
        table.add_row(entry.name, f"{count_parameters(create_model(entry.name)):,}", recipe, entry.description)
    Console().print(table)


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
            print(f"  {file}  sha256 {digest}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digits", description="Train, evaluate and serve handwritten-digit classifiers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_options(p: argparse.ArgumentParser, dataset_default: str | None = "mnist") -> None:
        p.add_argument("--dataset", default=dataset_default, help="mnist, fashion-mnist, or another MNIST-format set with --data-dir")
        p.add_argument("--data-dir", help="folder holding the dataset's four IDX files")

    p = commands.add_parser("train", help="train a model from the zoo")
    p.add_argument("--model", default="seed", help="zoo model (see `digits models`)")
    data_options(p)
    p.add_argument("--epochs", type=int, help="default: the model's recipe")
    p.add_argument("--batch-size", type=int, help="default: the model's recipe")
    p.add_argument("--lr", type=float, help="learning rate; default: the model's recipe")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="scale pixels to mean 0, std 1 (default: the recipe's; seed feeds raw 0–255)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset", type=int, help="train on the first N training images only")
    p.add_argument("--out", help="run folder (default runs/<model>-<timestamp>)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the newest run of --model)")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("evaluate", help="test-set metrics, confusion matrix and mistakes of a checkpoint")
    p.add_argument("checkpoint")
    data_options(p, dataset_default=None)
    p.add_argument("--out", help="folder for confusion.png and mistakes.png (default: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("models", help="list the model zoo")
    p.set_defaults(run=cmd_models)

    p = commands.add_parser("data", help="where each dataset is, and its checksums")
    data_options(p, dataset_default=None)
    p.add_argument("--verify", action="store_true", help="read every file and check its sha256")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except DigitsError as e:
        print(f"digits: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("digits: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
