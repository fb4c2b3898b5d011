"""The race: inside a kept time limit, screen many configurations cheaply, promote the best, train the finalists.

At 2-10 trials Optuna's pruners cannot act (successive halving passes everything until 2η trials reach a rung), so
the race is planned instead (auto-sklearn 2.0's portfolio raced by successive halving; Egele et al. 2023: a short
run of every candidate, then the top k, matched Hyperband at a tenth of the compute):

1. rung 0: every candidate (the portfolio, then the sampler's, :mod:`~melanoma_search.budget.candidates`) trains
   ``race.rungs[0]`` (one fold, one epoch by default), as many as the screening share of the limit holds;
2. each later rung: the best 1/``eta`` of the one before, at its fidelity, while the screening share lasts;
3. the final: the ``finalists`` best, each trained on every fold for the most epochs in ``final_epochs`` that the
   time left allows (a candidate whose fewest epochs cannot finish is passed over, in one line): export-ready members.

Every step is an Optuna trial in the study's storage, enqueued with its fidelity in the ``race`` user attribute, and
run by the ordinary workers and backends, so the dashboard shows the race live, several workers share a rung, and a
killed race is resumed by the same command from its trials (finished rungs are not rerun; its re-queued trials
continue from their saved epochs) within what is left of its limit. A screening trial ends PRUNED after its last
fold with its score in ``race.score`` (TPE reads a pruned trial as less informed than a complete one, which it is);
only finalists are COMPLETE, so the export's members are the finalists and earlier full trials. When the race ends the
study records how well each rung's order agreed with the finalists' cross-validated scores (``race_agreement``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from melanoma_search.budget.agreement import rank_agreement
from melanoma_search.budget.candidates import candidates
from melanoma_search.budget.estimate import Estimator
from melanoma_search.budget.limit import TimeLimit, minutes
from melanoma_search.errors import ConfigError
from melanoma_search.search.objective import Objective
from melanoma_search.search.progress import format_params
from melanoma_search.search.spec import RungSpec, StudySpec
from melanoma_search.search.trial import trial_config

__all__ = ["RACE", "RACE_AGREEMENT", "Race", "race_limit"]

RACE = "race"
"""Study attribute: the current race (id, limit, spent, done); trial attribute: the trial's place in a race."""
RACE_AGREEMENT = "race_agreement"
FINAL = "final"


def race_limit(study: optuna.Study, *, seconds: float, reserve: float, started: float | None = None
               ) -> tuple[TimeLimit, str]:
    """The limit of the race this run starts or resumes: an unfinished race in the study continues in what it left
    (its id and the seconds it spent are in the study), otherwise a new race starts with the whole limit."""
    state = study.user_attrs.get(RACE)
    now = started or time.time()
    if isinstance(state, dict) and not state.get("done") and isinstance(state.get("id"), str):
        spent = float(state.get("spent", 0.0))
        return TimeLimit(seconds, reserve=reserve, spent_before=spent, started=now), state["id"]
    return TimeLimit(seconds, reserve=reserve, started=now), time.strftime("%Y%m%d-%H%M%S")


@dataclass
class _Entry:
    """One trial the race wants: a candidate's configuration at a rung."""

    candidate: int
    params: dict[str, Any]
    rung: int | str
    folds: list[int]
    epochs: int
    predicted: float
    tta: int | None = None
    train_fraction: float | None = None


class Race:
    """Plans and drives one race; ``execute(n)`` runs ``n`` enqueued trials on the run's workers and returns the
    backend's outcome (whose ``interrupted``, ``preempted`` or ``error`` stops the race, to be resumed)."""

    def __init__(self, *, study: optuna.Study, spec: StudySpec, objective: Objective, base: Mapping[str, Any],
                 limit: TimeLimit, race_id: str, estimator: Estimator, workers: int, seed: int | None,
                 log: Callable[[str], None] = print) -> None:
        assert spec.race is not None
        self.study, self.spec, self.race, self.objective = study, spec, spec.race, objective
        self.base, self.limit, self.id, self.estimator = dict(base), limit, race_id, estimator
        self.workers, self.seed, self.log = max(1, workers), seed, log
        self.all_folds = list(objective.folds(int(self.base.get("data", {}).get("n_folds", 5))))

    # -- the plan ------------------------------------------------------------------------------------------------

    def run(self, execute: Callable[[int], Any]) -> Any:
        self._save(done=False)
        clock = _SpentClock(self)
        clock.start()
        outcome = None
        try:
            for index in range(len(self.race.rungs)):
                entries = self._mine(index)
                if not entries:
                    planned = self._screen(index)
                    if not planned:
                        break
                    self._enqueue(planned)
                outcome = self._drain(execute)
                self._save(done=None)
                if _stopped(outcome):
                    return outcome
            wanted = max(0, self.race.finalists - len(self._mine(FINAL)))
            while True:  # the finalists, then one more at a time while the time left holds another
                if wanted:
                    self._enqueue(self._finalists(wanted))
                outcome = self._drain(execute) or outcome
                self._save(done=None)
                if _stopped(outcome):
                    return outcome
                if not self._finalists(1, plan_only=True):
                    break
                wanted = 1
            self._finish()
            return outcome
        except ConfigError:  # the limit holds not even one candidate: nothing to resume
            self._save(done=True)
            raise
        finally:
            clock.stop()
            self._save(done=None)

    def preview(self) -> list[str]:
        """What this race would do in a fresh study (``run --dry-run``), assuming the candidates rank in the order
        they are screened (a dry run measures nothing): each rung's trials and predicted time, the finalists' epochs."""
        rung = self.race.rungs[0]
        first = self._first_rung(folds=self.all_folds[:rung.folds], epochs=rung.epochs,
                                 budget=self._screen_left() * self.workers, share=_rows(rung))
        lines, kept, spent = [], first, sum(e.predicted for e in first)
        for index, later in enumerate(self.race.rungs[1:], start=1):
            kept = [self._entry(e.candidate, e.params, rung=index, folds=self.all_folds[:later.folds],
                                epochs=later.epochs) for e in kept[:max(1, math.ceil(len(kept) / self.race.eta))]]
            spent += sum(e.predicted for e in kept)
            lines.append(f"rung {index}: the best {len(kept)} at {later.folds} fold(s) x {later.epochs} epoch(s), "
                         f"predicted {minutes(sum(e.predicted for e in kept))}")
        room = max(0.0, self.limit.left() * self.workers - spent)
        chosen: list[_Entry] = []
        for entry in kept + [e for e in first if e not in kept]:
            if len(chosen) == self.race.finalists:
                break
            share = min(self.limit.left() - spent / self.workers, room / (self.race.finalists - len(chosen))) * 0.97
            final = self._fitting(entry.candidate, entry.params, share=share)
            if final is not None:
                chosen.append(final)
                room -= final.predicted
                lines.append(f"finalist {len(chosen)}: {len(self.all_folds)} fold(s) x {final.epochs} epoch(s), "
                             f"predicted {minutes(final.predicted)} | {format_params(final.params)}")
        used = (spent + sum(e.predicted for e in chosen)) / self.workers
        lines.append(f"planned {minutes(used)} of the {minutes(self.limit.left())} left on {self.workers} "
                     f"worker(s), {len(first)} candidate(s) screened, {len(chosen)} finalist(s)")
        return lines

    def _screen(self, index: int) -> list[_Entry]:
        """Rung ``index``'s trials: for rung 0 as many new candidates as the screening share holds (with room for
        the later rungs), for a later rung the best 1/eta of the one before, if the share still holds them."""
        rung = self.race.rungs[index]
        folds = self.all_folds[:rung.folds]
        budget = self._screen_left() * self.workers
        if index == 0:
            return self._first_rung(folds=folds, epochs=rung.epochs, budget=budget, share=_rows(rung))
        previous = sorted(self._scored(index - 1), key=lambda t: -t[1])
        keep = max(1, math.ceil(len(previous) / self.race.eta))
        entries = [self._entry(c, p, rung=index, folds=folds, epochs=rung.epochs) for c, _, p in previous[:keep]]
        if len(previous) < 2 or sum(e.predicted for e in entries) > budget:
            self.log(f"race: rung {index} skipped ({len(previous)} candidate(s) screened; its {len(entries)} "
                     f"promotion(s) predicted {minutes(sum(e.predicted for e in entries))}, "
                     f"{minutes(max(0.0, budget / self.workers))} of the screening share left)")
            return []
        self.log(f"race: rung {index}: the best {keep} of {len(previous)} promoted to {len(folds)} fold(s) x "
                 f"{rung.epochs} epoch(s), predicted {minutes(sum(e.predicted for e in entries))}")
        return entries

    def _first_rung(self, *, folds: list[int], epochs: int, budget: float, share: str = "") -> list[_Entry]:
        seen = [t.params for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                                  TrialState.PRUNED))
                if isinstance(t.user_attrs.get(RACE), dict)]  # raced before: an earlier race's scores stand
        later = sum(r.folds * r.epochs / (len(folds) * epochs) / self.race.eta ** (i + 1)
                    for i, r in enumerate(self.race.rungs[1:]))  # later rungs' cost per rung-0 candidate
        planned: list[_Entry] = []
        for params in candidates(self.study, self.spec, self.base, seen=seen, seed=self.seed):
            try:
                entry = self._entry(len(planned), params, rung=0, folds=folds, epochs=epochs)
            except _Unpriced as exc:  # its network cannot take a step here: no trial would either
                self.log(f"race: {format_params(params)} not raced: {exc}")
                continue
            spent = sum(e.predicted for e in planned) + entry.predicted
            if spent * (1 + later) > budget:
                if not planned:
                    raise ConfigError(self._too_small(entry))
                self.log(f"race: no more candidates screened: with candidate {len(planned)} rung 0 is predicted "
                         f"{minutes(spent * (1 + later) / self.workers)} with its later rungs, and "
                         f"{minutes(budget / self.workers)} of the screening share ({self.race.screen_share:.0%} of "
                         "the limit) is left")
                break
            planned.append(entry)
            if len(planned) >= self.race.max_candidates:
                break
        self.log(f"race {self.id}: rung 0 screens {len(planned)} candidate(s) at {len(folds)} fold(s) x {epochs} "
                 f"epoch(s){share}, predicted {minutes(sum(e.predicted for e in planned) / self.workers)} on "
                 f"{self.workers} worker(s); {minutes(self.limit.left())} of the limit left")
        return planned

    def _too_small(self, entry: _Entry) -> str:
        final = self._entry(entry.candidate, entry.params, rung=FINAL, folds=self.all_folds,
                            epochs=self.race.final_epochs[0])
        need = entry.predicted + final.predicted
        return (f"the time limit is too small for even one candidate: the first needs {minutes(need)} (screening "
                f"{minutes(entry.predicted)}, then {len(self.all_folds)} folds x {self.race.final_epochs[0]} "
                f"epoch(s) {minutes(final.predicted)}) and {minutes(max(0.0, self.limit.left()))} are left; give at "
                f"least --time-limit {math.ceil(need / max(0.05, 1 - self.race.screen_share) + self.limit.reserve)}")

    def _finalists(self, count: int, *, plan_only: bool = False) -> list[_Entry]:
        """The ``count`` best candidates not yet final (highest rung reached, then its score), each with the most
        epochs that fit in its share of the time left; ``plan_only``: whether any would fit, said nowhere."""
        self.estimator.refresh()  # the trials just finished measured this machine
        reached: dict[int, tuple[int, float, dict[str, Any]]] = {}
        for index in range(len(self.race.rungs)):
            for candidate, score, params in self._scored(index):
                reached[candidate] = (index, score, params)
        final = {t.user_attrs[RACE]["candidate"] for t in self._mine(FINAL)}
        ranked = sorted(((c, r) for c, r in reached.items() if c not in final),
                        key=lambda kv: (-kv[1][0], -kv[1][1]))
        room = max(0.0, self.limit.left()) * self.workers
        chosen: list[_Entry] = []
        for candidate, (_, _, params) in ranked:
            if len(chosen) == count:
                break
            share = min(self.limit.left(), room / (count - len(chosen))) * 0.97  # 3 %: the prediction's error
            # the best candidate is not passed over for an even split: it may take the whole room (fewer finalists)
            entry = self._fitting(candidate, params, share=share) or self._fitting(
                candidate, params, share=min(self.limit.left(), room) * 0.97)
            if entry is None:
                if not plan_only:
                    low = self._entry(candidate, params, rung=FINAL, folds=self.all_folds,
                                      epochs=self.race.final_epochs[0])
                    self.log(f"race: candidate {candidate} "
                             + self.limit.refusal(f"final at {low.epochs} epoch(s)", low.predicted))
                continue
            chosen.append(entry)
            room -= entry.predicted
            if not plan_only:
                self.log(f"race: finalist candidate {candidate}: {len(self.all_folds)} folds x {entry.epochs} "
                         f"epoch(s), predicted {minutes(entry.predicted)} | {format_params(params)}")
        if not chosen and not plan_only:
            self.log(f"race: no finalist fits in the {minutes(max(0.0, self.limit.left()))} left")
        return chosen

    def _fitting(self, candidate: int, params: dict[str, Any], *, share: float) -> _Entry | None:
        low, high = self.race.final_epochs
        for epochs in range(high, low - 1, -1):
            entry = self._entry(candidate, params, rung=FINAL, folds=self.all_folds, epochs=epochs)
            if entry.predicted <= share:
                return entry
        return None

    def _screen_left(self) -> float:
        """Seconds of the screening share still ahead: the finalists keep ``1 - screen_share`` of the limit."""
        usable = self.limit.seconds - self.limit.reserve
        return max(0.0, self.limit.left() - (1 - self.race.screen_share) * usable)

    # -- trials --------------------------------------------------------------------------------------------------

    def _entry(self, candidate: int, params: dict[str, Any], *, rung: int | str, folds: list[int],
               epochs: int) -> _Entry:
        screening = None if rung == FINAL else self.race.rungs[int(rung)]
        tta = None if screening is None else screening.tta
        fraction = None if screening is None or screening.train_fraction == 1 else screening.train_fraction
        config = trial_config(self.base, params, self.objective, fidelity={
            "folds": folds, "epochs": epochs, "tta": tta, "train_fraction": fraction})
        estimate = self.estimator.predict(config)  # probed where nothing was measured
        if estimate.seconds is None:
            raise _Unpriced(estimate.source)
        seconds = estimate.seconds
        return _Entry(candidate=candidate, params=dict(params), rung=rung, folds=folds, epochs=epochs, tta=tta,
                      train_fraction=fraction, predicted=seconds)

    def _enqueue(self, entries: list[_Entry]) -> None:
        """Enqueue the trials; a screening trial carries the end of the screening share (``until``), so one whose
        prediction at its start (from the trials measured since the plan) no longer fits there does not start."""
        screen_end = time.time() + self._screen_left()
        for entry in entries:
            place: dict[str, Any] = {"id": self.id, "rung": entry.rung, "candidate": entry.candidate,
                                     "folds": entry.folds, "epochs": entry.epochs, "tta": entry.tta,
                                     "train_fraction": entry.train_fraction, "predicted": round(entry.predicted, 1)}
            if entry.rung != FINAL:
                place["until"] = round(screen_end, 1)
            self.study.enqueue_trial(entry.params, user_attrs={RACE: place})

    def _mine(self, rung: int | str) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False)
                if isinstance(a := t.user_attrs.get(RACE), dict) and a.get("id") == self.id and a.get("rung") == rung]

    def _scored(self, rung: int) -> list[tuple[int, float, dict[str, Any]]]:
        """``(candidate, score, params)`` of the rung's screened candidates (the last score of one screened twice)."""
        out = {t.user_attrs[RACE]["candidate"]: (float(t.user_attrs[RACE]["score"]), dict(t.params))
               for t in sorted(self._mine(rung), key=lambda t: t.number) if "score" in t.user_attrs[RACE]}
        return [(c, s, p) for c, (s, p) in out.items()]

    def _drain(self, execute: Callable[[int], Any]) -> Any:
        """Run this race's waiting trials: the new ones, each on a ticket of the launch, and the re-queued ones of a
        stopped run, which workers run first and without one (their ticket was taken when they first started), so
        no ticket is left over for a trial the race did not plan."""
        waiting = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   if isinstance(a := t.user_attrs.get(RACE), dict) and a.get("id") == self.id]
        new = sum("failed_trial" not in t.system_attrs for t in waiting)
        return execute(new) if waiting else None

    # -- the record ----------------------------------------------------------------------------------------------

    def _finish(self) -> None:
        agreement = rank_agreement(self.study)
        self.study.set_user_attr(RACE_AGREEMENT, agreement)
        screened = {r: len(self._mine(r)) for r in range(len(self.race.rungs))}
        finals = [t for t in self._mine(FINAL) if t.state == TrialState.COMPLETE]
        self.log(f"race {self.id} done in {minutes(self.limit.spent())} of {minutes(self.limit.seconds)}: "
                 + ", ".join(f"rung {r} held {n}" for r, n in screened.items())
                 + f", {len(finals)} finalist(s) complete")
        for rung, figures in agreement.items():
            self.log(f"race: {rung} vs final cv score over {figures['n']} configuration(s): "
                     + (f"Spearman {figures['spearman']:.2f}, Kendall {figures['kendall']:.2f}"
                        if figures["spearman"] is not None else "too few to rank (needs 3)"))
        self._save(done=True)

    def _save(self, *, done: bool | None) -> None:
        state = dict(self.study.user_attrs.get(RACE) or {})
        if state.get("id") != self.id:
            state = {"id": self.id}
        state.update(limit=self.limit.seconds, reserve=self.limit.reserve, spent=round(self.limit.spent(), 1))
        if done is not None:
            state["done"] = done
        self.study.set_user_attr(RACE, state)


class _Unpriced(Exception):
    """A candidate with no predicted cost: nothing measured its key and its probe failed."""


class _SpentClock(threading.Thread):
    """Writes the race's spent seconds into the study every 30 s, so a race killed outright (``kill -9``) resumes
    with at most 30 s of its limit unaccounted for."""

    def __init__(self, race: Race, *, every: float = 30.0) -> None:
        super().__init__(daemon=True, name="race-spent-clock")
        self.race, self.every, self._stop_event = race, every, threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            try:
                self.race._save(done=None)
            except Exception:  # the storage is briefly unreachable: the next beat writes it
                continue

    def stop(self) -> None:
        self._stop_event.set()


def _stopped(outcome: Any) -> bool:
    return outcome is not None and bool(getattr(outcome, "interrupted", False) or getattr(outcome, "preempted", False)
                                        or getattr(outcome, "error", None))


def _rows(rung: RungSpec) -> str:
    return "" if rung.train_fraction == 1 else f" on {rung.train_fraction:.0%} of the rows"
