"""Synchronous successive halving for searches with more trials than the cluster runs at once.

Tune's ASHA is asynchronous: a trial that reaches a rung is compared only with the trials that
reached it before, and the first to arrive always goes on. With 8 trials and 2 at a time, the
first trials in line run to the end whatever they score (measured: ASHA then spent 94 % of the
compute of running everything). Here every trial waits (paused, its slot free for the next
one) at each rung until all live trials have reached it; then the best 1/reduction_factor go on
from their checkpoints and the rest stop: successive halving, the algorithm ASHA makes
asynchronous, which is what a small cluster wants.

Ray's ``HyperBandScheduler`` does the waiting, pausing and halving; it is given one bracket that
holds every trial of the search, starting at ``grace_period``. Paused trials keep their
searcher slot, so the number of trials training at once is limited here instead, by a
``TrialSlots`` actor: a trial takes a slot before its Ray Train run starts and the scheduler
frees it when the trial pauses, stops, finishes or fails.
"""

from __future__ import annotations

import math
import time
from typing import Any

import ray
from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler
from ray.tune.schedulers.hyperband import _Bracket


def rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The epochs at which trials are compared, as Ray's bracket steps them: grace,
    int(grace × factor), … and the last epoch."""
    points, epoch = [], grace_period
    while epoch < max_t:
        points.append(epoch)
        epoch = int(min(epoch * reduction_factor, max_t))
    return [*points, max_t]


def survivors(trials: int, reduction_factor: float, rung_count: int) -> list[int]:
    """How many trials run to each rung (the bracket keeps ceil(n / factor) at each)."""
    counts = [trials]
    for _ in range(rung_count - 1):
        counts.append(math.ceil(counts[-1] / reduction_factor))
    return counts


@ray.remote(num_cpus=0)
class TrialSlots:
    """At most ``size`` trials train at once; a trial holds its slot until it is freed. Also
    the scheduler's decision for each trial at each epoch (go on, or not), which a trial that
    reached a rung waits for before it trains further."""

    def __init__(self, size: int):
        self.size = size
        self.holders: set[str] = set()
        self.decisions: dict[tuple[str, int], bool] = {}

    def decide(self, trial_id: str, epoch: int, go: bool) -> None:
        self.decisions[(trial_id, epoch)] = go
        if not go:
            self.holders.discard(trial_id)

    def decision(self, trial_id: str, epoch: int) -> bool | None:
        return self.decisions.get((trial_id, epoch))

    def take(self, trial_id: str) -> bool:
        if trial_id in self.holders or len(self.holders) < self.size:
            self.holders.add(trial_id)
            return True
        return False

    def free(self, trial_id: str) -> None:
        self.holders.discard(trial_id)


def slots_actor(name: str, size: int = 1) -> Any:
    """The search's slot actor (created on first use; found by name after a restore)."""
    return TrialSlots.options(name=name, get_if_exists=True).remote(size)


def take_slot(name: str, trial_id: str, poll_s: float = 0.5) -> None:
    """Block the trial until one of the search's training slots is free."""
    slots = ray.get_actor(name)
    said = False
    while not ray.get(slots.take.remote(trial_id)):
        if not said:
            print(f"[raynlp] trial {trial_id} waits for a training slot", flush=True)
            said = True
        time.sleep(poll_s)


def await_decision(name: str, trial_id: str, epoch: int, poll_s: float = 0.2) -> None:
    """Return when the scheduler lets the trial go on past ``epoch``; when it pauses or stops
    the trial instead, wait here until Tune ends this process (returning would finish it)."""
    slots = ray.get_actor(name)
    while ray.get(slots.decision.remote(trial_id, epoch)) is not True:
        time.sleep(poll_s)


class SyncHalving(HyperBandScheduler):
    """Successive halving over all ``num_trials`` trials at once: rungs at ``rungs(...)``."""

    def __init__(
        self,
        *,
        num_trials: int,
        grace_period: int,
        reduction_factor: float,
        max_t: int,
        slots: str,
        time_attr: str = "epoch",
    ):
        super().__init__(time_attr=time_attr, max_t=max_t, reduction_factor=reduction_factor)
        self._num_trials = num_trials
        self._grace = grace_period
        self._halvings = len(rungs(grace_period, reduction_factor, max_t)) - 1
        self._slots = slots

    def _create_bracket(self, s: int) -> _Bracket:  # one bracket, whatever band slot asks
        return _Bracket(
            time_attr=self._time_attr,
            max_trials=self._num_trials,
            init_t_attr=self._grace,
            max_t_attr=self._max_t_attr,
            eta=self._eta,
            s=self._halvings,
            stop_last_trials=self._stop_last_trials,
        )

    def _free(self, trial: Trial) -> None:
        ray.get_actor(self._slots).free.remote(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        go = action == TrialScheduler.CONTINUE
        ray.get_actor(self._slots).decide.remote(trial.trial_id, int(result[self._time_attr]), go)
        return action

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        """Also reached when a trial completes or fails (HyperBand routes both here)."""
        self._free(trial)
        super().on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"SyncHalving: {self._num_trials} trials, {self._halvings} halvings"
