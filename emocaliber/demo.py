"""The project's main job on its embedded default: the three-stage EmoCaliber pipeline on SynthEmo, on a CPU.

make_synthemo -> build_cot (rule-based teacher) -> validation prompts held out of the stage-3 pool -> tiny
Qwen2.5-VL -> stage-1 SFT -> confidence targets -> stage-2 SFT -> stage-3 GRPO, validated as it trains, handing
on its best-validating checkpoint -> evaluation of every stage -> one report next to the oracle that knows each
image's best possible confidence, with stage 3 against stage 2 as paired differences on the same test images.

Every step calls the entry point a GPU user runs (``emocaliber prepare ...``, ``train sft|grpo``, ``eval``: the
same ``main(argv)`` functions as the scripts under ``data_prep/``, ``recipes/`` and ``eval/``), in this process,
with the demo's settings: the YAML files in ``recipes/demo/`` (shipped in the package, so an installed
``emocaliber demo`` needs no checkout). This module keeps only what sizes the run. A step whose command line,
project code and thread count are unchanged since it last finished is reused, so a re-run after an interruption
continues where it stopped (``--force`` redoes everything).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
#: The demo's settings, next to the 7B recipes in a checkout (``recipes/demo``).
RECIPES = PACKAGE / "recipes" / "demo"
STAGES = ("base", "stage1", "stage2", "stage3")


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is a whole number (what torch would take from it), else 2, the cores of the
    machine the demo is timed on."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 2


class DemoError(RuntimeError):
    """A step of the demo failed; the message names the step and the command to rerun it alone."""


#: The reduced run of the test suite (``--quick``). 450 images per task leave 180 stage-2 records (with 120 the
#: quick stage 2 stated no confidence); with 4 stage-2 epochs no stage-3 rollout parsed, so GRPO had nothing to
#: learn from. 32 validation prompts keep stage 3's validation (at step 0 and the last step) to about a second.
QUICK: dict[str, Any] = {"n_train": 450, "n_test": 40, "samples": 4, "stage1_epochs": 4.0, "stage2_epochs": 8.0,
                         "stage3_steps": 6, "n_val": 32, "n_bootstrap": 20, "n_paired": 50, "n_triplets": 30}


@dataclass
class DemoSettings:
    """What sizes the run; every other setting is in ``recipes/demo/*.yaml``. A size left None is the YAML's."""

    out: str = "runs/demo"
    seed: int = 0
    n_train: int | None = None          # SynthEmo training images per task (prepare.yaml: synthemo n-train)
    n_test: int | None = None           # test images per task (synthemo n-test)
    samples: int | None = None          # stage-1 samples per stage-2 image (targets samples)
    stage1_epochs: float | None = None  # stage1.yaml num_train_epochs
    stage2_epochs: float | None = None  # stage2.yaml num_train_epochs
    stage3_steps: int | None = None     # stage3.yaml max_steps
    n_val: int | None = None            # stage-3 validation prompts held out of its pool (holdout n-val)
    n_bootstrap: int | None = None      # bootstrap resamples of each evaluation (eval n-bootstrap)
    n_paired: int | None = None         # resamples of the paired stage-3 vs stage-2 intervals (report paired-resamples)
    n_triplets: int | None = None       # with --blend-rank: held-out triplets of each blend evaluation (eval-blends)
    #: torch's intra-op threads in every step but the evaluations. The table depends on them (a float sum is
    #: split another way), so the demo fixes them rather than taking torch's one per core: the same seed then
    #: gives the same table on any machine with the same CPU type, however many cores it has.
    threads: int = field(default_factory=default_threads)
    #: The four evaluations run last, this many at a time, each in its own process with one torch thread. Greedy
    #: decoding with the tiny model hardly gains from a second thread while two processes do twice the work, and
    #: their predictions are the same byte for byte as with two threads.
    eval_workers: int = 2
    #: Rank-O-ToM in stage 3 (docs/rank_o_tom.md): blends of stage-3 training images mixed into its prompts, the
    #: ranking reward at prepare.yaml's weight (``blend_rank_weight`` overrides it; 0 keeps the blends and their
    #: soft targets without the ranking term), and the blend-rank evaluation of stages 2 and 3 in the report.
    blend_rank: bool = False
    blend_rank_weight: float | None = None
    force: bool = False

    @classmethod
    def quick(cls, out: str, seed: int = 0, **sizes: Any) -> DemoSettings:
        """The quick sizes; a size given here (not None) takes precedence."""
        chosen = {**QUICK, **{k: v for k, v in sizes.items() if v is not None}}
        return cls(out=out, seed=seed, **chosen)


def load_recipe(name: str) -> dict[str, Any]:
    """One of the demo's YAML files as a mapping."""
    import yaml

    with open(RECIPES / name, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def options(values: dict[str, Any]) -> list[str]:
    """A YAML section as command-line options: ``{"n-test": 40, "no-progress": true}`` -> ``--n-test 40
    --no-progress``; false or null leaves the option out."""
    argv: list[str] = []
    for key, value in values.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not None and value is not False:
            argv += [f"--{key}", str(value)]
    return argv


def run_command(name: str, args: Sequence[str]) -> None:
    """Call ``emocaliber NAME ARGS`` as a function in this process (imports stay warm); a non-zero exit is a
    :class:`DemoError` naming the command to rerun alone."""
    command = f"emocaliber {name} {' '.join(map(str, args))}"
    try:
        code = _entry(name)(list(map(str, args)))
    except SystemExit as e:  # argparse and the training entry points exit on a user's mistake
        code = e.code
    if code not in (0, None):
        raise DemoError(f"emocaliber {name} exited with {code}; rerun it alone with: {command}")


def _entry(name: str) -> Callable[[list[str]], int | None]:
    """The ``main(argv)`` of an ``emocaliber`` command, or of a ``module:function`` outside the table."""
    import importlib

    from emocaliber.cli import COMMANDS, load

    if name in COMMANDS:
        return load(name)
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def code_digest(root: Path = PACKAGE) -> str:
    """SHA-256 over the package's code and the demo's YAML files, so that a finished step is not reused after a
    change its command line does not show (an edited recipe, a fixed parser); installed libraries are not
    covered (``--force``)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class Pipeline:
    """Ordered steps with a done-marker each, holding the step's command line and the project code's digest."""

    def __init__(self, settings: DemoSettings, log: Callable[[str], None] = print):
        self.s = settings
        self.out = Path(settings.out)
        self.log = log
        self.start = time.perf_counter()
        self.markers = self.out / ".done"
        self.code = code_digest()

    def elapsed(self) -> str:
        m, s = divmod(int(time.perf_counter() - self.start), 60)
        return f"{m:d}m{s:02d}s"

    def step(self, index: int, total: int, name: str, key: list[str], run: Callable[[], None], *,
             force: bool) -> bool:
        """Run one step unless it finished before with the same command line, code and thread count; returns
        whether it ran."""
        if not self._begin(index, total, name, key, self.s.threads, force=force):
            return False
        t0 = time.perf_counter()
        run()
        self._finish(index, total, name, key, self.s.threads, time.perf_counter() - t0)
        return True

    def _begin(self, index: int, total: int, name: str, key: list[str], threads: int, *, force: bool) -> bool:
        """Whether the step has to run; if so its marker and output are gone when this returns."""
        marker = self.markers / f"{name}.json"
        if not force and _read_marker(marker) == self._done(key, threads):
            self.log(f"[{index}/{total}] {name}: done before, reused ({self.elapsed()})")
            return False
        marker.unlink(missing_ok=True)
        # A step that runs anew starts from nothing: a trainer would otherwise resume from its old checkpoints
        # and the evaluation would find its old predictions "finished".
        shutil.rmtree(self.output(name), ignore_errors=True)
        self.log(f"[{index}/{total}] {name} ... ({self.elapsed()})")
        return True

    def _done(self, key: list[str], threads: int) -> dict[str, Any]:
        """A done-marker's content: what decides a step's output besides its inputs' files. Paths inside the run
        directory are written relative to it, so a run directory moved or copied keeps its finished steps (a
        copy of a finished demo continued with ``--blend-rank`` reuses its stages 1 and 2)."""
        return {"command": [self._relative(str(arg)) for arg in key], "code": self.code, "threads": threads}

    def _relative(self, arg: str) -> str:
        root = str(self.out)
        return "<run>" + arg[len(root):] if arg == root or arg.startswith(root + os.sep) else arg

    def _finish(self, index: int, total: int, name: str, key: list[str], threads: int, seconds: float) -> None:
        self.markers.mkdir(parents=True, exist_ok=True)
        marker = self.markers / f"{name}.json"
        # Written whole or not at all: a marker cut short by a kill would otherwise stop every later run.
        partial = marker.with_suffix(".partial")
        partial.write_text(json.dumps(self._done(key, threads)))
        partial.replace(marker)
        self.log(f"[{index}/{total}] {name}: finished in {seconds:.0f}s ({self.elapsed()})")

    def evaluate(self, first: int, total: int, steps: list[tuple[str, list[str]]], *, force: bool) -> None:
        """The evaluation steps, ``eval_workers`` at a time in worker processes with one torch thread each; each
        one's printed output is shown when it finishes. One that fails does not lose the others: they finish and
        are marked done before its error is raised."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        todo = [(i, name, key) for i, (name, key) in enumerate(steps, first)
                if self._begin(i, total, name, key, 1, force=force)]
        if not todo:
            return
        # spawn: a fork of this process would inherit torch's thread pool, which is not safe to use after a fork.
        with ProcessPoolExecutor(min(self.s.eval_workers, len(todo)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            running = {pool.submit(_evaluation_worker, key): (i, name, key) for i, name, key in todo}
            failed: list[DemoError] = []
            for future in as_completed(running):
                i, name, key = running[future]
                try:
                    seconds, printed = future.result()
                except DemoError as e:
                    failed.append(e)
                    continue
                print(printed, end="", flush=True)
                self._finish(i, total, name, key, 1, seconds)
        if failed:
            raise failed[0]

    def output(self, name: str) -> Path:
        """The directory a step writes, named after the step (``eval-stage2`` -> ``eval/stage2``)."""
        return self.out / {"synthemo": "data"}.get(name, name.replace("eval-", "eval/"))

    # -------------------------------------------------------------------------------------------- the steps
    def plan(self) -> list[tuple[str, list[str], Callable[[], None]]]:
        """(step name, command line, run) in order; a command line is ``[command, *args]`` of ``emocaliber``."""
        s, o = self.s, self.out
        data, cot, holdout = self.output("synthemo"), self.output("cot"), self.output("holdout")
        prepare = load_recipe("prepare.yaml")
        seed = ["--seed", str(s.seed)]

        def sizes(**values: Any) -> dict[str, Any]:  # the sizes this run sets; None leaves the YAML's
            return {k: v for k, v in values.items() if v is not None}

        def command(name: str, args: list[str]) -> tuple[list[str], Callable[[], None]]:
            return [name, *args], lambda: run_command(name, args)

        def stage(number: int, model: Path, train_file: Path, **size: Any) -> list[str]:
            return ["--config", str(RECIPES / f"stage{number}.yaml"), "--model_name_or_path", str(model),
                    "--train_file", str(train_file), "--image_root", str(data),
                    "--output_dir", str(o / f"stage{number}"), *seed, *options(sizes(**size))]

        steps: list[tuple[str, list[str], Callable[[], None]]] = []
        steps.append(("synthemo", *command("prepare synthemo", [
            "--out", str(data), *seed,
            *options({**prepare["synthemo"], **sizes(**{"n-train": s.n_train, "n-test": s.n_test})})])))
        steps.append(("cot", *command("prepare cot", [
            "--records", str(data / "train.jsonl"), "--image-root", str(data), "--out", str(cot), *seed,
            *options(prepare["cot"])])))
        holdout_key, holdout_run = command("prepare holdout", [
            "--records", str(cot / "stage3.jsonl"), "--train", str(holdout / "stage3_train.jsonl"),
            "--val", str(holdout / "stage3_val.jsonl"), *seed,
            *options({**prepare["holdout"], **sizes(**{"n-val": s.n_val})})])
        steps.append(("holdout", holdout_key, lambda: (holdout.mkdir(parents=True, exist_ok=True), holdout_run())))
        steps.append(("base", ["build_tiny_model", str(o / "base"), str(s.seed)],
                      lambda: _build_base(o / "base", s.seed)))
        steps.append(("stage1", *command("train sft", stage(
            1, o / "base", cot / "stage1.jsonl", num_train_epochs=s.stage1_epochs))))
        steps.append(("targets", *command("prepare targets", [
            "--model", str(o / "stage1"), "--data", str(cot / "stage2_pool.jsonl"), "--image-root", str(data),
            "--out", str(o / "targets" / "stage2.jsonl"), *seed,
            *options({**prepare["targets"], **sizes(samples=s.samples)})])))
        steps.append(("stage2", *command("train sft", stage(
            2, o / "stage1", o / "targets" / "stage2.jsonl", num_train_epochs=s.stage2_epochs))))
        rank: list[str] = []
        if s.blend_rank:
            # After stage 2, so that the plain demo's steps before it stay reused (a step that runs anew redoes
            # every later one). Blends of stage 3's training images only: no validation or test image is in one.
            blends = self.output("blends")
            steps.append(("blends", *command("prepare blends", [
                "--records", str(holdout / "stage3_train.jsonl"), "--image-root", str(data), "--out", str(blends),
                *seed, *options(prepare["blends"])])))
            # The ranking reward's table starts from stage 2's confidences on the clean stage-3 images.
            table = self.output("blend-table")
            steps.append(("blend-table", *command("eval", [
                "--model", str(o / "stage2"), "--data", str(holdout / "stage3_train.jsonl"), "--image-root",
                str(data), "--out", str(table), *seed, *options({**prepare["eval"], "n-bootstrap": 0})])))
            weight = {} if s.blend_rank_weight is None else {"blend_rank_weight": s.blend_rank_weight}
            rank = ["--blend_file", str(blends / "blends.jsonl"), "--blend_rank_table",
                    str(table / "predictions.jsonl"), *options({**prepare["blend-rank"], **weight})]
        steps.append(("stage3", *command("train grpo", [*stage(
            3, o / "stage2", holdout / "stage3_train.jsonl", max_steps=s.stage3_steps),
            "--val_file", str(holdout / "stage3_val.jsonl"), *rank])))
        for name in STAGES:
            steps.append((f"eval-{name}", *command("eval", [
                "--model", str(o / name), "--data", str(data / "test.jsonl"), "--image-root", str(data),
                "--out", str(o / "eval" / name), *seed,
                *options({**prepare["eval"], **sizes(**{"n-bootstrap": s.n_bootstrap})}),
                *(["--no-confidence"] if name in ("base", "stage1") else [])])))
        for name in ("stage2", "stage3") if s.blend_rank else ():
            steps.append((f"eval-blends-{name}", *command("eval-blends", [
                "--model", str(o / name), "--data", str(data / "test.jsonl"), "--image-root", str(data),
                "--out", str(self.output(f"eval-blends-{name}")), *seed,
                *options({**prepare["eval-blends"], **sizes(**{"n-triplets": s.n_triplets})})])))
        return steps

    def run(self) -> dict[str, Any]:
        import torch

        steps = self.plan()
        total = len(steps) + 1
        training = [step for step in steps if not step[0].startswith("eval-")]
        evaluations = [(name, key) for name, key, _ in steps if name.startswith("eval-")]
        ran = self.s.force
        saved = torch.get_num_threads()
        torch.set_num_threads(self.s.threads)
        try:
            for i, (name, key, fn) in enumerate(training, 1):
                # Once a step has run anew, everything after it may see different inputs: redo it too.
                ran = self.step(i, total, name, key, fn, force=ran) or ran
        finally:
            torch.set_num_threads(saved)
        self.evaluate(len(training) + 1, total, evaluations, force=ran)
        self.log(f"[{total}/{total}] report ({self.elapsed()})")
        from emocaliber.demo_report import write_demo_report

        try:
            n_paired = self.s.n_paired or load_recipe("prepare.yaml")["report"]["paired-resamples"]
            return write_demo_report(self.out, settings=asdict(self.s), elapsed=self.elapsed(), n_paired=n_paired,
                                     seed=self.s.seed, blend_rank=self.s.blend_rank)
        except (OSError, ValueError) as e:  # an evaluation's output was changed or removed after it finished
            raise DemoError(f"report: {e}; to redo that evaluation delete its marker "
                            f"({self.markers}/eval-<stage>.json) and rerun, or rerun with --force") from None


def _read_marker(path: Path) -> Any:
    """A done-marker's content, or None when there is none or it cannot be read (the step then runs again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _evaluation_worker(command: list[str]) -> tuple[float, str]:
    """Run one evaluation command with one torch thread, its output kept; returns its seconds and that output."""
    import contextlib
    import io
    import traceback

    import torch

    torch.set_num_threads(1)
    printed = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            run_command(command[0], command[1:])
        except DemoError as e:
            raise DemoError(f"{e}\n{printed.getvalue()[-2000:]}") from None
        except Exception:  # noqa: BLE001 - a crash: its traceback as text, so the pool finishes the others
            raise DemoError(f"emocaliber {command[0]} crashed; rerun it alone with: emocaliber "
                            f"{' '.join(command)}\n{printed.getvalue()[-2000:]}{traceback.format_exc()[-3000:]}"
                            ) from None
    return time.perf_counter() - t0, printed.getvalue()


def _build_base(out: Path, seed: int) -> None:
    from emocaliber.modeling import build_tiny_model

    build_tiny_model(out, seed=seed)


def add_demo_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from emocaliber.argtypes import whole_number

    p.add_argument("--out", default=DemoSettings.out, help="run directory (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="the reduced sizes the test suite runs (a few minutes): " + ", ".join(
                       f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                   + "; a size flag given with it takes precedence")
    sizes = p.add_argument_group("sizes (default: recipes/demo/*.yaml, or --quick's)")
    sizes.add_argument("--n-train", type=whole_number(1), help="SynthEmo training images per task")
    sizes.add_argument("--n-test", type=whole_number(1), help="SynthEmo test images per task")
    sizes.add_argument("--samples", type=whole_number(1), help="stage-1 samples per image for the confidence targets")
    sizes.add_argument("--stage1-epochs", type=float, help="stage-1 SFT epochs")
    sizes.add_argument("--stage2-epochs", type=float, help="stage-2 SFT epochs")
    sizes.add_argument("--stage3-steps", type=whole_number(1), help="GRPO steps")
    sizes.add_argument("--n-val", type=whole_number(1), help="stage-3 validation prompts held out of its pool")
    sizes.add_argument("--n-bootstrap", type=whole_number(0), help="bootstrap resamples of each evaluation")
    sizes.add_argument("--n-paired", type=whole_number(1),
                       help="resamples of the paired stage-3 against stage-2 intervals in the report")
    sizes.add_argument("--n-triplets", type=whole_number(1),
                       help="with --blend-rank: held-out triplets of each blend-rank evaluation")
    p.add_argument("--threads", type=whole_number(1), default=None,
                   help="torch threads of every step but the evaluations; the table depends on them (default: "
                        "OMP_NUM_THREADS if set, else 2)")
    p.add_argument("--eval-workers", type=whole_number(1), default=DemoSettings.eval_workers,
                   help="evaluations run at a time, each a process with one torch thread (default %(default)s)")
    p.add_argument("--blend-rank", action="store_true",
                   help="Rank-O-ToM in stage 3: blends of its training images mixed into its prompts with the "
                        "ranking reward, and the blend-rank evaluation of stages 2 and 3 in the report "
                        "(recipes/demo/prepare.yaml: blends, blend-rank, eval-blends)")
    p.add_argument("--blend-rank-weight", type=float, default=None,
                   help="with --blend-rank: the ranking reward's weight (default: prepare.yaml's; 0 keeps the "
                        "blends and their soft targets without the ranking term)")
    p.add_argument("--force", action="store_true", help="redo every step even if it finished before")
    return p


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The run's settings: ``--quick``'s sizes or the YAML's, a size flag given taking precedence over either."""
    size_names = [f.name for f in fields(DemoSettings) if f.name in QUICK]
    given = {name: getattr(args, name) for name in size_names}
    if args.quick:
        settings = DemoSettings.quick(args.out, args.seed, **given)
    else:
        settings = DemoSettings(out=args.out, seed=args.seed, **given)
    if args.threads is not None:
        settings.threads = args.threads
    settings.eval_workers = args.eval_workers
    if args.blend_rank_weight is not None and not args.blend_rank:
        raise SystemExit("emocaliber demo: error: --blend-rank-weight needs --blend-rank")
    if args.blend_rank_weight is not None and args.blend_rank_weight < 0:
        raise SystemExit(f"emocaliber demo: error: --blend-rank-weight must be >= 0, got {args.blend_rank_weight}")
    settings.blend_rank, settings.blend_rank_weight = args.blend_rank, args.blend_rank_weight
    settings.force = args.force
    return settings


def run_demo(args: argparse.Namespace, prog: str = "emocaliber demo") -> int:
    try:
        Pipeline(settings_from_args(args)).run()
    except DemoError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "emocaliber demo") -> int:
    """``emocaliber demo`` (``make demo``)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run_demo(add_demo_arguments(parser).parse_args(argv), prog)


if __name__ == "__main__":
    raise SystemExit(main())
