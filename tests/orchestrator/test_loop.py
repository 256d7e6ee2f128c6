"""loop.train and the hooks that need no Caffe, driven by a fake solver (numbers only): hook
order, the per-step facts, stop requests, after_train on exceptions, and resume's state round
trip. The real paths (Caffe's solver, snapshots, validation) are pinned by test_run/test_resume."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from orchestrator.config import experiment as config
from orchestrator.contract import Status
from orchestrator.rundir import RunDir
from orchestrator.train import loop
from orchestrator.train.hooks.data_state import DataStateHook
from orchestrator.train.hooks.divergence import DivergenceHook
from orchestrator.train.hooks.early_stop import EarlyStopHook, LrPlateauHook
from orchestrator.train.hooks.progress import ProgressHook
from orchestrator.train.hooks.snapshot import SnapshotHook


class FakeNet:
    """What the loop and the Caffe-free hooks read of a pycaffe Net: the loss blob, the layers."""

    def __init__(self, layers: Sequence[Any] = ()) -> None:
        self.blobs = {"loss": SimpleNamespace(data=np.zeros(1), count=1)}
        self.outputs = ["loss"]
        self.layers = list(layers)
        self._layer_names = [f"layer{i}" for i in range(len(self.layers))]
        self.top_names: dict[str, list[str]] = {n: [] for n in self._layer_names}


class FakeSolver:
    """solver.step(1) advances the iteration and sets the loss to `loss_at(iteration)`."""

    def __init__(
        self,
        loss_at: Callable[[int], float] = lambda it: 1.0,
        start: int = 0,
        base_lr: float = 0.1,
        fail_at: int | None = None,
        layers: Sequence[Any] = (),
    ) -> None:
        self.iter, self.loss_at, self.fail_at = start, loss_at, fail_at
        self.param = SimpleNamespace(base_lr=base_lr)
        self.net = FakeNet(layers)

    def step(self, n: int) -> None:
        if self.fail_at is not None and self.iter + n >= self.fail_at:
            raise RuntimeError(f"boom at {self.iter + n}")
        self.iter += n
        self.net.blobs["loss"].data[0] = self.loss_at(self.iter)

    def snapshot(self) -> None:
        """Caffe's own snapshot; the fake run directory records what the hook does around it."""


class Recorder(loop.Hook):
    """Logs every call, with what it saw of the step's facts; `act(ctx)` runs in after_step."""

    def __init__(
        self, name: str, log: list[tuple[Any, ...]], act: Callable[[loop.Context], None] | None = None
    ) -> None:
        self.name, self.log, self.act = name, log, act

    def before_train(self, ctx: loop.Context) -> None:
        self.log.append((self.name, "before", ctx.iteration))

    def after_step(self, ctx: loop.Context) -> None:
        self.log.append((self.name, "step", ctx.iteration, ctx.val, ctx.new_best))
        if self.act:
            self.act(ctx)

    def after_train(self, ctx: loop.Context) -> None:
        self.log.append((self.name, "after", ctx.iteration, ctx.val, ctx.new_best, ctx.status))


def context(tmp_path: Path, solver: FakeSolver, max_iter: int = 5, **sections: Any) -> loop.Context:
    exp = config.from_dict(
        {"name": "t", "data": {"train": str(tmp_path)}, "solver": {"max_iter": max_iter}, **sections}
    )
    return loop.Context(solver=solver, exp=exp, run=RunDir(tmp_path / "run"), start_iter=solver.iter)


def test_hooks_run_in_list_order_and_the_run_completes(tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    ctx = loop.train(
        context(tmp_path, FakeSolver(lambda it: 1.0 / it), max_iter=3), [Recorder("a", log), Recorder("b", log)]
    )
    assert [e[:3] for e in log] == [
        ("a", "before", 0),
        ("b", "before", 0),
        ("a", "step", 1),
        ("b", "step", 1),
        ("a", "step", 2),
        ("b", "step", 2),
        ("a", "step", 3),
        ("b", "step", 3),
        ("a", "after", 3),
        ("b", "after", 3),
    ]
    assert ctx.status is Status.COMPLETED and ctx.stop_reason == "reached max_iter 3"
    assert ctx.step.loss == pytest.approx(1 / 3) and ctx.step.lr == 0.1 and ctx.status.exit_code == 0


def test_step_facts_reach_later_hooks_of_the_same_step_only(tmp_path: Path) -> None:
    """A validation at iterations 2 and 4 is seen by the hooks after it in that step, by
    nobody in the next step or in after_train; the run's best stays."""

    def validate(ctx: loop.Context) -> None:
        if ctx.iteration in (2, 4):
            ctx.val, ctx.new_best, ctx.best = {"mean_iu": 0.5}, True, {"iteration": 2, "metrics": {"mean_iu": 0.5}}
            ctx.step.stats = []

    log: list[tuple[Any, ...]] = []
    ctx = loop.train(
        context(tmp_path, FakeSolver(), max_iter=4),
        [Recorder("before", log), Recorder("val", log, validate), Recorder("after", log)],
    )
    seen = {(e[0], e[2]): e[3:5] for e in log if e[1] == "step"}
    assert seen[("before", 2)] == (None, False)  # earlier in the list: not yet
    assert seen[("after", 2)] == ({"mean_iu": 0.5}, True)
    assert seen[("after", 3)] == (None, False)  # the loop reset it
    assert all(e[3:5] == (None, False) for e in log if e[1] == "after")
    assert ctx.best == {"iteration": 2, "metrics": {"mean_iu": 0.5}} and ctx.step.stats is None


def test_a_stop_request_ends_the_run_after_that_step_and_the_first_wins(tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []

    def stop(status: Status) -> Callable[[loop.Context], None]:
        return lambda ctx: ctx.request_stop(status, f"{status} at {ctx.iteration}") if ctx.iteration == 2 else None

    ctx = loop.train(
        context(tmp_path, FakeSolver(), max_iter=10),
        [Recorder("a", log, stop(Status.EARLY_STOPPED)), Recorder("b", log, stop(Status.DIVERGED))],
    )
    assert ctx.status is Status.EARLY_STOPPED and ctx.stop_reason == "early_stopped at 2"
    assert ctx.iteration == 2 and ("b", "step", 2, None, False) in log  # the step finishes
    assert log[-1] == ("b", "after", 2, None, False, Status.EARLY_STOPPED)


@pytest.mark.parametrize("where", ["solver", "hook"])
def test_after_train_runs_when_training_raises(tmp_path: Path, where: str) -> None:
    def explode(ctx: loop.Context) -> None:
        if ctx.iteration == 3:
            raise ValueError("hook broke")

    log: list[tuple[Any, ...]] = []
    solver = FakeSolver(fail_at=3 if where == "solver" else None)
    ctx = context(tmp_path, solver, max_iter=10)
    with pytest.raises(RuntimeError if where == "solver" else ValueError):
        loop.train(ctx, [Recorder("a", log, None if where == "solver" else explode), Recorder("b", log)])
    after = [e for e in log if e[1] == "after"]
    assert [e[0] for e in after] == ["a", "b"] and all(e[5] is Status.FAILED for e in after)
    assert ctx.stop_reason == ("RuntimeError: boom at 3" if where == "solver" else "ValueError: hook broke")
    assert ctx.status.exit_code == 2


def test_keyboard_interrupt_is_interrupted(tmp_path: Path) -> None:
    def interrupt(ctx: loop.Context) -> None:
        raise KeyboardInterrupt

    log: list[tuple[Any, ...]] = []
    ctx = context(tmp_path, FakeSolver(), max_iter=10)
    with pytest.raises(KeyboardInterrupt):
        loop.train(ctx, [Recorder("a", log, interrupt)])
    assert ctx.status is Status.INTERRUPTED and ctx.status.exit_code == 130 and log[-1][1] == "after"


def test_divergence_hook_stops_on_a_loss_explosion(tmp_path: Path) -> None:
    """exp.checks is the rules' Thresholds: the hook takes the section as it is."""
    solver = FakeSolver(lambda it: 100.0 if it == 9 else 1.0 + 0.01 * (it % 3))
    ctx = context(tmp_path, solver, max_iter=20, checks={"loss_factor": 5, "warmup": 3})
    loop.train(ctx, [DivergenceHook(ctx.exp.checks, "VALID")])
    assert ctx.status is Status.DIVERGED and ctx.iteration == 9 and ctx.status.exit_code == 3
    assert [f.code for f in ctx.findings] == ["loss-explosion", "diverged"]


class Validator(loop.Hook):
    """Stands in for the validation hook: a score every `every` iterations from `score(it)`."""

    name = "validation"

    def __init__(self, score: Callable[[int], float], every: int = 2) -> None:
        self.score, self.every, self.best = score, every, None

    def after_step(self, ctx: loop.Context) -> None:
        if ctx.iteration % self.every == 0:
            ctx.val = {"iter": ctx.iteration, "mean_iu": self.score(ctx.iteration)}
            if self.best is None or ctx.val["mean_iu"] > self.best:
                self.best, ctx.new_best = ctx.val["mean_iu"], True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


class Layer:
    """A Python data layer with get_state/set_state (the paired layer's resume protocol)."""

    type = "Python"
    blobs: list[Any] = []

    def __init__(self) -> None:
        self.pos = 0

    def get_state(self) -> dict[str, int]:
        return {"pos": self.pos}

    def set_state(self, state: dict[str, int]) -> None:
        self.pos = state["pos"]


def score(it: int) -> float:
    """Improves until iteration 6, then a plateau with a small bump at 14."""
    return min(it, 6) / 10 + (0.05 if it == 14 else 0.0)


def decision_hooks(solver: FakeSolver) -> list[loop.Hook]:
    return [
        Validator(score),
        LrPlateauHook("mean_iu", patience=2, min_delta=0.0, factor=0.5, min_lr=0.01),
        EarlyStopHook("mean_iu", patience=4, min_delta=0.0),
        DivergenceHook(config.ChecksCfg(), None),
        DataStateHook(solver),
    ]


class Advance(loop.Hook):
    name = "advance"

    def after_step(self, ctx: loop.Context) -> None:
        ctx.solver.net.layers[0].pos += 1


def train_once(
    tmp_path: Path, max_iter: int, start: int = 0, state: dict[str, Any] | None = None
) -> tuple[loop.Context, list[loop.Hook]]:
    solver = FakeSolver(lambda it: 1.0 + 0.01 * math.sin(it), start=start, layers=[Layer()])
    hooks = decision_hooks(solver)
    for h in hooks:
        if state is not None:
            h.load_state_dict(state[h.name])
    ctx = context(tmp_path, solver, max_iter=max_iter)
    return loop.train(ctx, hooks + [Advance()]), hooks


def states(hooks: list[loop.Hook]) -> dict[str, Any]:
    """The hooks' states as hooks.json holds them (through JSON)."""
    return json.loads(json.dumps({h.name: h.state_dict() for h in hooks}))


def test_state_round_trip_continues_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """lr-on-plateau halves base_lr at 10, 18 and 22 (patience restarts after each cut; the
    bump at 14 is a new best), early stop ends the run at 22; stopping at 9 and resuming from
    the hooks' JSON state gives the same decisions, lr, data position and states."""
    whole, whole_hooks = train_once(tmp_path, 40)
    assert whole.status is Status.EARLY_STOPPED and whole.iteration == 22
    assert [(f.data["iteration"], f.data["to"]) for f in whole.findings if f.code == "lr-reduced"] == [
        (10, 0.05),
        (18, 0.025),
        (22, 0.0125),
    ]
    first, first_hooks = train_once(tmp_path, 9)
    assert first.status is Status.COMPLETED
    saved = states(first_hooks)
    second, second_hooks = train_once(tmp_path, 40, start=9, state=saved)
    assert (second.status, second.iteration, second.stop_reason) == (whole.status, whole.iteration, whole.stop_reason)
    assert second.solver.param.base_lr == whole.solver.param.base_lr == 0.0125
    assert second.solver.net.layers[0].pos == whole.solver.net.layers[0].pos == 22
    assert states(second_hooks) == states(whole_hooks)


def test_lr_plateau_restores_its_lr_on_resume_unless_the_user_set_one(tmp_path: Path) -> None:
    hook = LrPlateauHook("mean_iu", 2, 0.0, 0.5, 0.01)
    hook.load_state_dict({"plateau": {"best": 0.6, "best_iter": 6, "bad": 0}, "base_lr": 0.025})
    solver = FakeSolver(start=20)
    loop.train(context(tmp_path, solver, max_iter=21), [hook])
    assert solver.param.base_lr == 0.025
    hook.load_state_dict({"plateau": {}, "base_lr": 0.025})
    hook.keep_solver_lr()
    solver = FakeSolver(start=20, base_lr=0.3)
    loop.train(context(tmp_path, solver, max_iter=21), [hook])
    assert solver.param.base_lr == 0.3


class FakeRun:
    """The run directory calls of the snapshot hook, recorded."""

    def __init__(self) -> None:
        self.committed: list[int] = []
        self.kept: set[int] = set()

    def caffe_snapshot(self, iteration: int) -> tuple[Path, Path]:
        return Path(f"snap_iter_{iteration}.caffemodel"), Path(f"snap_iter_{iteration}.solverstate")

    def commit_snapshot(
        self, iteration: int, caffemodel: Path, solverstate: Path, hooks: dict[str, Any], config: dict[str, Any]
    ) -> None:
        assert caffemodel.name == f"snap_iter_{iteration}.caffemodel" and hooks == {"validation": {"best": None}}
        self.committed.append(iteration)

    def prune_snapshots(self, keep_last: int, keep: set[int]) -> None:
        self.kept = keep


@pytest.mark.parametrize(
    "ending,at,snaps",
    [(None, None, [2, 4, 5, 6, 10, 12]), (Status.INTERRUPTED, 7, [2, 4, 5, 6, 7]), (Status.DIVERGED, 10, [2, 4, 5, 6])],
)
def test_snapshots_on_interval_new_best_and_a_sound_end(
    tmp_path: Path, ending: Status | None, at: int | None, snaps: list[int]
) -> None:
    """Snapshots every 5 iterations, at each new best (the validations at 2, 4 and 6 improve),
    and at the end; a diverged step is never saved, not even on the interval."""
    solver = FakeSolver()
    run = FakeRun()
    val = Validator(lambda it: min(it, 6) / 10, every=2)
    stop = Recorder("stop", [], lambda ctx: ctx.request_stop(ending, "x") if ending and ctx.iteration == at else None)
    snap = SnapshotHook(5, 2, True, lambda: {"validation": {"best": None}})
    ctx = context(tmp_path, solver, max_iter=12)
    ctx.run = run  # type: ignore[assignment]
    loop.train(ctx, [val, stop, snap])
    assert run.committed == snaps
    assert run.kept == {6} and ctx.best_snapshot == "snapshots/iter_6"


def test_progress_bar_lines(tmp_path: Path) -> None:
    """Not a terminal: the last step and validation steps always print (here: no time passes
    between steps, so nothing else does), with the shared bar's layout."""
    out = io.StringIO()
    log: list[tuple[Any, ...]] = []
    rec = {"iter": 2, "mean_iu": 0.25, "pixel_accuracy": 0.5}
    val = Recorder("v", log, lambda ctx: setattr(ctx, "val", rec) if ctx.iteration == 2 else None)
    loop.train(context(tmp_path, FakeSolver(), max_iter=4), [val, ProgressHook(False, out)])
    note, *lines = out.getvalue().splitlines()
    assert note == "val @ 2: mIoU 0.250  pixel acc 0.500"  # the validation's own line, kept above the bar
    assert len(lines) == 2 and lines[0].startswith("train [############............] 2/4 ")
    assert "val mIoU 0.250" in lines[0] and "it/s ETA" in lines[0]
    assert lines[1].startswith("train [########################] 4/4 ") and "loss 1.0000 lr 0.1" in lines[1]
    quiet = io.StringIO()
    loop.train(context(tmp_path, FakeSolver(), max_iter=4), [ProgressHook(True, quiet)])
    assert quiet.getvalue() == ""


class Reactor(Recorder):
    """A Recorder that also logs after_validation, with what it saw."""

    def after_validation(self, ctx: loop.Context) -> None:
        self.log.append((self.name, "validation", ctx.iteration, ctx.val, ctx.new_best))


def test_after_validation_runs_right_after_the_hook_that_validated(tmp_path: Path) -> None:
    """Validation at 2 (in after_step) and at the end (in after_train): every hook, also one
    before the validator in the list, hears after_validation once, right after the validator
    and before the later hooks' after_step/after_train; a step without validation has none."""
    log: list[tuple[Any, ...]] = []

    class Val(Reactor):
        def after_step(self, ctx: loop.Context) -> None:
            super().after_step(ctx)
            if ctx.iteration == 2:
                ctx.val, ctx.new_best = {"iter": 2, "mean_iu": 0.5}, True

        def after_train(self, ctx: loop.Context) -> None:
            ctx.val = {"iter": ctx.iteration, "mean_iu": 0.4}
            super().after_train(ctx)

    loop.train(context(tmp_path, FakeSolver(), max_iter=3), [Reactor("a", log), Val("v", log), Reactor("b", log)])
    at2 = [e[:2] for e in log if e[2] == 2]
    assert at2 == [("a", "step"), ("v", "step"), ("a", "validation"), ("v", "validation"), ("b", "validation")] + [
        ("b", "step")
    ]
    assert [e[:2] for e in log if e[2] == 3 and e[1] == "validation"] == [("a", "validation")] + [
        ("v", "validation"),
        ("b", "validation"),
    ]
    assert [e[0] for e in log if e[2] == 3 and e[1] == "after"] == ["a", "v", "b"]
    assert log.index(("b", "validation", 3, {"iter": 3, "mean_iu": 0.4}, False)) < log.index(
        ("b", "after", 3, {"iter": 3, "mean_iu": 0.4}, False, Status.COMPLETED)
    )
    assert not [e for e in log if e[1] == "validation" and e[2] == 1]


def named(name: str, after: tuple[str, ...] = (), last: bool = False) -> loop.Hook:
    hook = loop.Hook()
    hook.name, hook.after, hook.last = name, after, last
    return hook


def test_order_the_hooks_declare_is_checked_before_training(tmp_path: Path) -> None:
    ok = [named("stats"), named("divergence", ("stats",)), named("summary", last=True)]
    loop.check_order(ok)
    loop.check_order([named("divergence", ("stats",))])  # a hook that is not there sets no order
    with pytest.raises(ValueError, match="'divergence' must come after 'stats'"):
        loop.check_order([named("divergence", ("stats",)), named("stats")])
    with pytest.raises(ValueError, match="'summary' must be the last hook"):
        loop.check_order([named("summary", last=True), named("metrics")])
    with pytest.raises(ValueError, match="'stats' is in the list twice"):
        loop.check_order([named("stats"), named("stats")])
    solver = FakeSolver()
    with pytest.raises(ValueError, match="must come after"):  # train refuses before any hook runs
        loop.train(context(tmp_path, solver, max_iter=3), [DivergenceHook(config.ChecksCfg(), None), named("stats")])
    assert solver.iter == 0


def test_the_workers_hook_list_keeps_the_declared_order(tmp_path: Path) -> None:
    """build_hooks with every optional hook on satisfies what each hook declares."""
    from orchestrator.contract import RunMeta
    from orchestrator.train.worker import build_hooks

    ctx = context(
        tmp_path,
        FakeSolver(),
        data={"train": str(tmp_path), "val": str(tmp_path)},
        early_stop={"enabled": True},
        lr_on_plateau={"enabled": True},
        progress={"tensorboard": True},
    )
    hooks = build_hooks(ctx.solver, ctx.exp, RunMeta(num_classes=3, val_images=4), [])
    assert {"validation", "best_pictures", "lr_on_plateau", "early_stop", "tensorboard"} <= {h.name for h in hooks}
    loop.check_order(hooks)
    assert hooks[-1].name == "summary" and hooks[-2].name == "snapshot"


def test_restore_warns_about_hook_states_it_cannot_match(capsys: pytest.CaptureFixture[str]) -> None:
    """hooks.json as every snapshot so far wrote it ({name: state}) restores without a word; a
    state nobody takes, a stateful hook without a saved state, a state its hook refuses: warnings."""
    old = {
        "validation": {"best": 0.5},
        "lr_on_plateau": {"plateau": {"best": 0.6, "best_iter": 6, "bad": 1}, "base_lr": 0.05},
        "tensorboard": {},
    }
    val, plateau = Validator(score), LrPlateauHook("mean_iu", 2, 0.0, 0.5, 0.01)
    assert loop.restore_hooks([val, plateau], old) == []
    assert val.best == 0.5 and plateau.base_lr == 0.05 and plateau.plateau.bad == 1
    assert capsys.readouterr().out == ""
    early = EarlyStopHook("mean_iu", 4, 0.0)
    found = loop.restore_hooks([Validator(score), early], {**old, "validation": {}})
    assert [(f.code, f.severity) for f in found] == [("hook-state-skipped", "warning")] * 3
    text = " ".join(f.message for f in found)
    assert "'lr_on_plateau' hook's state in the snapshot was not restored" in text
    assert "'early_stop' hook's state is not in the snapshot" in text
    assert "'validation' hook's state in the snapshot could not be read (KeyError" in text
    assert capsys.readouterr().out.count("warning: resume: ") == 3
