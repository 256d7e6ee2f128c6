"""`orchestrate predict RUN_DIR (--images DIR | --list FILE) --out DIR`: segment images with a
run's snapshot. The parent checks every input, then runs the Caffe work in a child
(orchestrator.predict.worker) so that a Caffe abort becomes a finding; the child writes into a
hidden partial folder that is renamed to `--out` only when everything is written."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.child import run_child
from common.datastats import read_stats
from common.errors import UserError
from data_prep.build import dataset_json_class_names
from data_prep.sources import IMAGE_EXTS, Pair, pair_folders, read_list
from orchestrator.config import yamlio
from orchestrator.contract import (
    EVAL_FILE,
    EXIT_BAD_INPUT,
    EXIT_OK,
    JOB_FILE,
    PREDICT_WORKER_MODULE,
    RUN_FILES,
    WEIGHTS,
    EnsembleModel,
    PredictJob,
    RunMeta,
    snapshot_relpath,
)
from orchestrator.predict.tta import parse as parse_tta
from orchestrator.run.supervisor import abort_finding
from orchestrator.rundir import RunDir, require_run_dir
from orchestrator.snapcheck import verify_snapshot

MARKER = ".segorch-predict"
PINNED = ".pinned-"  # weights held for the child while a live run prunes its own


def _snapshot_flag(which: str) -> str:
    return f"--snapshot {which}"


def _which_iteration(run: RunDir, which: str, snaps: dict[int, Path], flag: Callable[[str], str]) -> int | None:
    """The iteration `which` names (None: the newest intact one); `flag` spells a choice as the
    user wrote it (`--snapshot iter_N`, `--ensemble RUN:iter_N`), for the messages."""
    if which == "best":
        best = (run.summary_data().get("best") or {}).get("iteration")
        return best if best in snaps else None
    if which == "last":
        return None
    try:
        it = int(which.removeprefix("iter_"))
    except ValueError:
        raise UserError(f"{flag(which)}: expected best, last or iter_N", f"for example {flag('iter_400')}") from None
    if it not in snaps:
        raise UserError(
            f"{flag(which)}: {run.snapshots}/iter_{it} does not exist",
            f"choose one of: {', '.join(f'iter_{i}' for i in sorted(snaps))}",
        )
    return it


def choose_snapshot(run: RunDir, which: str, flag: Callable[[str], str] = _snapshot_flag) -> tuple[int, Path]:
    """(iteration, folder) for `best`, `last` or `iter_N`, verified (verify_snapshot). A damaged
    one is named with its file, renamed iter_N.corrupt (unless a live process owns the run), and
    `best`/`last` go on to the newest intact snapshot; a damaged `iter_N` is refused."""
    snaps = dict(run.snapshot_dirs())
    if not snaps:
        raise UserError(f"{run.root}: no snapshot to predict with", "train the run first (orchestrate run/resume)")
    it = _which_iteration(run, which, snaps, flag)
    rename = not run.lock_is_held()
    if it is not None:
        problem = verify_snapshot(snaps[it])
        if problem is None:
            return it, snaps[it]
        line = run.set_aside(it, snaps[it], problem, rename)
        if which != "best":
            raise UserError(f"snapshot {line}", f"choose another with {flag('iter_N')}")
        print(f"warning: skipped the best snapshot {line}", file=sys.stderr)
    found, damaged = run.intact_snapshot(rename=rename)
    for _, line in damaged:
        print(f"warning: skipped {line}", file=sys.stderr)
    if found is None:
        raise UserError(f"{run.root}: no intact snapshot to predict with", "train on: orchestrate resume RUN_DIR")
    if damaged or (it is not None and found[0] != it):
        print(f"warning: predicting with the newest intact snapshot, {snapshot_relpath(found[0])}", file=sys.stderr)
    return found


def collect_inputs(
    images: str | None, labels: str | None, list_file: str | None, root: str | None, need_labels: bool
) -> list[Pair]:
    """The images (and labels) to predict, in the data stage's list formats."""
    if list_file:
        text_lines = (
            [
                x.split()
                for x in Path(list_file).read_text(errors="replace").splitlines()
                if x.strip() and not x.strip().startswith("#")
            ]
            if Path(list_file).is_file()
            else []
        )
        with_labels = bool(text_lines) and all(len(x) == 2 for x in text_lines)
        if need_labels and not with_labels and text_lines:
            raise UserError(f"--eval: {list_file} has no label column", "write 'image label' per line, or drop --eval")
        return read_list(Path(list_file), Path(root) if root else None, labels=with_labels)
    if not images:
        raise UserError("predict needs --images DIR or --list FILE", "for example --list data/synth/val.txt")
    if labels:
        return pair_folders(Path(images), Path(labels))
    if need_labels:
        raise UserError(
            "--eval needs labels: --labels DIR with --images, or a list of 'image label' lines", "add --labels DIR"
        )
    folder = Path(images)
    if not folder.is_dir():
        raise UserError(f"--images: {images} is not a folder", "give the folder of the images")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not found:
        raise UserError(f"--images: {images} holds no images ({', '.join(sorted(IMAGE_EXTS))})", "check the folder")
    return [Pair(p, None, str(p)) for p in found]


def _data_stats(exp: dict[str, Any]) -> dict[str, Any]:
    """The data stage's stats.json of the val (else train) data, when there is one."""
    for key in ("val", "train"):
        stats = read_stats((exp.get("data") or {}).get(key), key=f"data.{key}", required=False)
        if stats:
            return stats
    return {}


def class_names(exp: dict[str, Any], meta: RunMeta) -> list[str] | None:
    """The net's class names, else data.build.class_names, else those of the raw dataset's
    dataset.json (data.build.root)."""
    if meta.class_names:
        return list(meta.class_names)
    build = (exp.get("data") or {}).get("build") or {}
    if isinstance(build.get("class_names"), list):
        return list(build["class_names"])
    root = build.get("root")
    return dataset_json_class_names(Path(root), meta.num_classes) if root else None


def _tuple(v: Any) -> Any:
    """A JSON list as a tuple (PredictJob is immutable), None as None."""
    return tuple(v) if v is not None else None


def _prepare_out(out: Path) -> Path:
    """A fresh partial folder beside `out`; `out` may not hold anything but an earlier prediction."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise UserError(f"--out {out} exists and is not an earlier prediction", "choose an empty or new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _run_config(run: RunDir) -> dict[str, Any]:
    """The run's resolved experiment (config.yaml) as a mapping."""
    fix = "restore the run's config.yaml (its resolved experiment)"
    return yamlio.load_mapping(run.config, "run's config.yaml", fix)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (instant, same disk), else a copy; FileNotFoundError when `src` is gone."""
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copyfile(src, dst)


@dataclass(frozen=True)
class _Choice:
    """A snapshot chosen by the user's words (`which`, spelt back by `flag`): what `_pin` needs
    to choose it again when a live run prunes it."""

    run: RunDir
    which: str
    flag: Callable[[str], str]
    chosen: tuple[int, Path]


def _pin(choice: _Choice, tmp: Path, i: int) -> tuple[int, str]:
    """(iteration, weights the child loads). A run that a live process owns prunes its snapshots
    while we predict (a new best or last retires the old one): the weights are hard-linked (else
    copied) into the partial folder first, so the child never finds them gone; `best` and `last`
    chosen anew when theirs went meanwhile, an `iter_N` that went is said."""
    run, which, flag, chosen = choice.run, choice.which, choice.flag, choice.chosen
    for _ in range(20):
        it, snap = chosen
        if not run.lock_is_held():
            return it, str(snap / WEIGHTS)
        pin = tmp / f"{PINNED}{i}.caffemodel"
        try:
            _link_or_copy(snap / WEIGHTS, pin)
            return it, str(pin)
        except FileNotFoundError:
            pin.unlink(missing_ok=True)
            if which not in ("best", "last"):
                raise UserError(
                    f"{flag(which)}: the run that owns {run.root} pruned {snapshot_relpath(it)} while predict chose it",
                    f"choose a snapshot the run keeps ({flag('best')} or {flag('last')})",
                ) from None
            chosen = choose_snapshot(run, which, flag)
    raise UserError(f"{run.root}: its snapshots were pruned faster than predict could take one", "predict again")


def _member_spec(spec: str) -> tuple[str, str]:
    """`--ensemble RUN_DIR[:SNAPSHOT]` as (run folder, best | last | iter_N; default best)."""
    run_dir, _, which = spec.rpartition(":")
    if not run_dir or not (which in ("best", "last") or which.startswith("iter_")):
        if run_dir and not Path(spec).is_dir() and Path(run_dir).is_dir():  # RUN:typo, RUN:
            raise UserError(
                f"--ensemble {spec}: {which!r} after ':' is not a snapshot",
                f"write {run_dir}:best, {run_dir}:last or {run_dir}:iter_N, or {run_dir} alone (its best)",
            )
        run_dir, which = spec, "best"
    return run_dir, which


def _ensemble_model(spec: str, meta: RunMeta, names: list[str] | None) -> tuple[EnsembleModel, _Choice]:
    """`--ensemble RUN_DIR[:SNAPSHOT]` (best, last or iter_N; default best) as a checked member
    and its choice (to pin): its snapshot verified as predict's own, its classes the same as the
    main run's."""
    run_dir, which = _member_spec(spec)
    run = require_run_dir(run_dir)

    def flag(w: str) -> str:
        return f"--ensemble {run_dir}:{w}"

    iteration, snap = choose_snapshot(run, which, flag)
    exp = _run_config(run)
    other = RunMeta.read(run.meta)
    theirs = class_names(exp, other)
    if other.num_classes != meta.num_classes or (names and theirs and list(theirs) != list(names)):
        raise UserError(
            f"--ensemble {spec}: its net has {other.num_classes} classes ({', '.join(theirs or []) or 'unnamed'}), "
            f"the run predicting has {meta.num_classes} ({', '.join(names or []) or 'unnamed'})",
            "ensemble only runs trained on the same classes",
        )
    stats = _data_stats(exp)
    model = EnsembleModel(
        run=str(run.root),
        weights=str(snap / WEIGHTS),
        snapshot=snapshot_relpath(iteration),
        resize=_tuple(stats.get("resize")),
        mean_bgr=_tuple(stats.get("mean_bgr")),
        input_size=(stats["height"], stats["width"]) if stats.get("height") else None,
    )
    return model, _Choice(run, which, flag, (iteration, snap))


def _pin_member(member: tuple[EnsembleModel, _Choice], tmp: Path, i: int) -> EnsembleModel:
    """An ensemble member with its weights pinned like the main snapshot's (_pin)."""
    model, choice = member
    it, weights = _pin(choice, tmp, i)
    return replace(model, weights=weights, snapshot=snapshot_relpath(it))


def predict(
    run_dir: str,
    *,
    out: str,
    images: str | None = None,
    labels: str | None = None,
    list_file: str | None = None,
    root: str | None = None,
    snapshot: str = "best",
    device: str = "cpu",
    evaluate: bool = False,
    batch: int = 1,
    quiet: bool = False,
    tta: str | None = None,
    ensemble: Sequence[str] = (),
) -> int:
    """Check the inputs, run the child, publish the folder; returns the exit code."""
    run = require_run_dir(run_dir)
    if batch < 1:
        raise UserError(f"--batch {batch}: must be >= 1", "for example --batch 4")
    if device != "cpu" and not (device.startswith("gpu:") and device[4:].isdigit()):
        raise UserError(f"--device {device!r}: expected cpu or gpu:N", "for example --device gpu:0")
    aug = parse_tta(tta) if tta else None  # a bad --tta is refused before anything is written
    main = _Choice(run, snapshot, _snapshot_flag, choose_snapshot(run, snapshot))
    pairs = collect_inputs(images, labels, list_file, root, evaluate)
    exp = _run_config(run)
    meta = RunMeta.read(run.meta)
    names = class_names(exp, meta)
    chosen = [_ensemble_model(spec, meta, names) for spec in ensemble]
    stats = _data_stats(exp)
    out_dir = Path(out).resolve()
    tmp = _prepare_out(out_dir)
    try:
        iteration, weights = _pin(main, tmp, 0)
        members = tuple(_pin_member(m, tmp, i) for i, m in enumerate(chosen, 1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    job = PredictJob(
        run=str(run.root),
        weights=weights,
        iteration=iteration,
        snapshot=snapshot_relpath(iteration),
        pairs=tuple((str(p.image), str(p.label) if p.label else None, p.where) for p in pairs),
        device=device,
        eval=evaluate,
        batch=batch,
        quiet=quiet,
        num_classes=meta.num_classes,
        ignore_label=meta.ignore_label,
        class_names=_tuple(names),
        resize=_tuple(stats.get("resize")),
        palette=stats.get("palette"),
        mean_bgr=_tuple(stats.get("mean_bgr")),
        input_size=(stats["height"], stats["width"]) if stats.get("height") else None,
        tta=aug.label() if aug and aug.active else None,
        ensemble=members,
    )
    (tmp / JOB_FILE).write_text(job.to_json())
    more = "".join(f" + {Path(m.run).name}/{m.snapshot}" for m in members)
    print(f"predicting {len(pairs)} image(s) with {run.root.name}/{job.snapshot}{more}", flush=True)
    try:
        child, _ = run_child(["-m", PREDICT_WORKER_MODULE, str(tmp / JOB_FILE)], tmp / RUN_FILES["log"], stdout=None)
        if child.returncode != 0:
            log = (tmp / RUN_FILES["log"]).read_text(errors="replace")
            err = [x[len("error: ") :] for x in log.splitlines() if x.startswith("error: ")]
            reason = err[-1] if err else str(abort_finding("predict-failed", child))
            print(f"predict failed: {reason}", file=sys.stderr)
            return EXIT_BAD_INPUT
        (tmp / JOB_FILE).unlink()
        for p in tmp.glob(f"{PINNED}*"):
            p.unlink()
        (tmp / MARKER).write_text(json.dumps({"run": str(run.root), "snapshot": job.snapshot}) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if evaluate:
        from orchestrator.predict.overlay import class_table

        result = json.loads((out_dir / EVAL_FILE).read_text())
        print(class_table(result, result["class_names"]))
    print(f"predictions: {out_dir}")
    return EXIT_OK
