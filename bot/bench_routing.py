"""Routing benchmark: a simulated month of the demo community's orders through the real engine.

    python -m bot bench-routing [--days 30] [--orders-per-day 40] [--seed 42]
        [--out var/bench/routing.json] [--throughput-orders 3000]

Every order is created, dispatched, accepted, returned, progressed and resolved by the real
services (bot.tickets, bot.dispatch, bot.staff) on a fresh, migrated SQLite file, under a
simulated clock: nothing sleeps. The month runs twice on the same orders, with learned routes
(refreshed each simulated midnight) and without, and is compared with today's hand-by-hand
relay on the same orders. Target misses are reported, not fatal.

Simulation assumptions (the figures depend on them; they live here, not in the engine):
* Month: 30 days from Monday 30 Nov 2026 (heating season); a Poisson number of orders a day
  around --orders-per-day (busier Mondays, quieter weekends), created mostly 7-11 h and
  17-21 h local time; buildings 1-16, lift categories only in buildings over six floors.
* Text and triage: each order is a held-out sentence of its true category (CATEGORY_MIX);
  the category ranking, routed category (the ranking's top) and urgency come from the real
  request classifier and safety rules, so misclassifications are the model's own.
* Truth: the owner of an order is the catalogue lead of its true category, except for
  LOCAL_OWNERS — one local deviation, as real communities have, so that learned routes have
  something to learn. Make it empty to measure a community where the catalogue is right.
* Staff: the assignee (or, for a queue order, the first member on shift; never the director)
  acts after a per-urgency delay, and only while on shift. A department that is not the
  owner returns the lead order as not_our_function; an arbitration (兜底) department does
  not: it coordinates the owner and resolves the order itself. The owner accepts, notes
  progress on site, and resolves. Assist and verify orders are accepted and finished.
  SLA reminders and escalations (bot.scheduler) are not simulated: nobody acts on them.
* Relay baseline: front desk → residents' committee → property office → department head →
  worker, cut short where an office on the way owns the order; each hand-off takes 0.5-4
  office hours (Mon-Fri 08:30-17:30) and with RELAY_WRONG_SHARE first goes to a wrong office
  (one more hand-off), so 4 hand-offs + 3 detours is the documented 7-hop case. Life-safety
  (P1) orders are phoned straight to the on-duty department, 2-15 minutes a hand-off.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
HELDOUT = ROOT / "tests" / "nlu" / "heldout.yml"
LOCAL = ZoneInfo("Asia/Shanghai")
SIM_START = datetime(2026, 11, 30, tzinfo=LOCAL)  # a Monday, in the heating season
REPORT_PREFIX = "report_"

TARGET_HOPS_MEAN = 1.15
TARGET_HOPS_P95 = 2.0
TARGET_DECISION_P95_MS = 5.0
TARGET_THROUGHPUT_PER_S = 500.0
TARGET_SLA_RATE = 0.95  # assumed: the catalogue sets deadlines, not a compliance goal
THROUGHPUT_BATCH = 50
DECISION_WARMUP = 20  # untimed plan_dispatch calls first: the first ones pay for caches

# Relative weights of true categories in a winter month: repairs dominate.
CATEGORY_MIX: Mapping[str, float] = {
    "water_leak": 14, "public_facility": 12, "heating": 10, "elevator_fault": 9,
    "sanitation": 8, "parking": 7, "neighbor_noise": 6, "fire_hazard": 4, "water_outage": 3,
    "power_outage": 3, "property_fee": 3, "pet_nuisance": 3, "elderly_care": 3,
    "garbage_sorting": 2, "neighbor_dispute": 2, "medical_service": 2,
    "government_service": 2, "public_security": 2, "greening_pest": 1,
    "illegal_construction": 1, "construction_noise": 1, "elevator_trapped": 1, "gas_leak": 1,
    "other": 1,
}
# (category, grid) -> the department that really owns it here. In grid 4 (buildings 13-16,
# a resettlement block) the street's sanitation team, under urban_management, clears the
# rubbish and cleans the stairwells, not the property company.
LOCAL_OWNERS: Mapping[tuple[str, str], str] = {("sanitation", "grid4"): "urban_management"}
LIFT_CATEGORIES = frozenset({"elevator_fault", "elevator_trapped"})
HOUR_WEIGHTS: tuple[float, ...] = (  # orders per local hour 0..23
    0.3, 0.2, 0.1, 0.1, 0.1, 0.3, 1.0, 3.0, 6.0, 7.0, 6.5, 5.0,
    3.5, 3.5, 4.0, 4.0, 4.0, 4.5, 5.5, 6.0, 5.0, 3.0, 1.5, 0.7,
)
WEEKDAY_FACTOR: tuple[float, ...] = (1.15, 1.05, 1.0, 1.0, 1.0, 0.9, 0.9)
CHANNEL_MIX: Mapping[str, float] = {"wechat": 45, "voice": 25, "sms": 15, "web": 15}

Spec = tuple[float, float, float]  # minutes as (low, high, mode) of a triangular draw
ACCEPT_MINUTES: Mapping[str, Spec] = {"P1": (1, 4, 2), "P2": (3, 40, 10),
                                      "P3": (10, 150, 40), "P4": (30, 720, 180)}
ON_SITE_MINUTES: Mapping[str, Spec] = {"P1": (5, 25, 12), "P2": (15, 180, 45),
                                       "P3": (30, 1440, 240), "P4": (60, 2880, 720)}
WORK_MINUTES: Mapping[str, Spec] = {"P1": (20, 180, 60), "P2": (30, 900, 180),
                                    "P3": (60, 2880, 480), "P4": (120, 7200, 1440)}
SIDE_WORK_MINUTES: Spec = (20, 480, 90)  # an assist or verify order, accepted to done
COORDINATION_MINUTES: Spec = (30, 240, 90)  # arbitration: getting the owner to act
SHIFT_START_SLACK: Spec = (2, 15, 5)  # someone coming on shift reaches a waiting order

RELAY_WRONG_SHARE = 0.2
RELAY_HANDOFF_HOURS = (0.5, 4.0)
RELAY_P1_MINUTES: Spec = (2, 15, 5)
OFFICE_DAYS = frozenset(range(5))
OFFICE_OPEN, OFFICE_CLOSE = clock_time(8, 30), clock_time(17, 30)


class BenchError(RuntimeError):
    """The benchmark could not be run; the message says what to fix."""


# ---------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Labelled:
    """One held-out sentence with the classifier's view of it."""

    text: str
    category: str  # true category
    routed: str  # the category the order is filed under (first in ranking)
    ranking: tuple[tuple[str, float], ...]
    urgency: str
    urgency_reason: str | None


@dataclass(frozen=True)
class SimOrder:
    index: int
    created_at: datetime  # aware, UTC
    building: str
    channel: str
    owner: str  # the department that really owns it (see LOCAL_OWNERS)
    sample: Labelled


def category_view(labels: Sequence[str], probabilities: Sequence[float], text: str, *,
                  config: Mapping[str, Any], default_urgency: Callable[[str], str]
                  ) -> tuple[str, tuple[tuple[str, float], ...], str, str | None]:
    """Return (routed category, ranking, urgency, reason) as the pipeline and triage decide."""
    from nlu.request_model import decide
    from nlu.safety import detect_emergency, raise_urgency

    emergency = detect_emergency(text)
    decision = decide(
        labels, probabilities, emergency_kind=emergency,
        emergency_categories=config["emergency_categories"],
        override_intents=config["emergency_override_intents"],
        category_ranking_length=config["category_ranking_length"],
        collapse_first=config["collapse_first"],
        min_label_probability=config["min_label_probability"],
    )
    ranking = [(str(r["name"]), round(float(r["confidence"]), 4))
               for r in decision.category_ranking]
    routed = decision.category
    # A safety rule can overrule the model; the routed category then heads the ranking.
    top = [item for item in ranking if item[0] == routed] or [(routed, 1.0)]
    ranking = top + [item for item in ranking if item[0] != routed]
    if emergency is not None:
        return routed, tuple(ranking), "P1", f"生命安全：{emergency}"
    urgency, reason = raise_urgency(text, default_urgency(routed))
    return routed, tuple(ranking), urgency, reason


def poisson(rng: random.Random, mean: float) -> int:
    """Draw a Poisson count (Knuth for small means, normal approximation above 60)."""
    if mean <= 0:
        return 0
    if mean > 60:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def plan_orders(*, days: int, per_day: float, seed: int,
                pool: Mapping[str, Sequence[Labelled]], buildings: Sequence[str],
                lift_buildings: Sequence[str], owner_of: Callable[[str, str], str],
                start: datetime = SIM_START) -> list[SimOrder]:
    """Draw the month's orders, oldest first: time, category, text, building, channel."""
    rng = random.Random(f"orders:{seed}")
    mix = {c: w for c, w in CATEGORY_MIX.items() if pool.get(c)}
    if not mix:
        raise BenchError(f"no held-out sentence for any category of the mix in {HELDOUT}")
    drafts = []
    for day in range(days):
        midnight = start + timedelta(days=day)
        for _ in range(poisson(rng, per_day * WEEKDAY_FACTOR[midnight.weekday()])):
            hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
            at = midnight + timedelta(hours=hour, seconds=rng.randrange(3600))
            category = _pick(rng, mix)
            building = rng.choice(list(lift_buildings if category in LIFT_CATEGORIES
                                       else buildings))
            drafts.append((at.astimezone(UTC), building, _pick(rng, CHANNEL_MIX),
                           rng.choice(list(pool[category]))))
    drafts.sort(key=lambda d: d[0])
    return [SimOrder(i, at, building, channel, owner_of(sample.category, building), sample)
            for i, (at, building, channel, sample) in enumerate(drafts)]


def add_working_hours(start: datetime, hours: float) -> datetime:
    """Return the moment `hours` of office time (Mon-Fri 08:30-17:30 local) after start."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if hours < 0:
        raise ValueError(f"hours must be >= 0, got {hours}")
    at, left = start.astimezone(LOCAL), timedelta(hours=hours)
    while True:
        opening = at.replace(hour=OFFICE_OPEN.hour, minute=OFFICE_OPEN.minute, second=0,
                             microsecond=0)
        closing = at.replace(hour=OFFICE_CLOSE.hour, minute=OFFICE_CLOSE.minute, second=0,
                             microsecond=0)
        if at.weekday() not in OFFICE_DAYS or at >= closing:
            at = opening + timedelta(days=1)  # walk to the next morning, then re-check
            continue
        at = max(at, opening)
        if at + left <= closing:
            return (at + left).astimezone(start.tzinfo)
        left -= closing - at
        at = closing


def relay_path(department: str, urgency: str) -> tuple[str, ...]:
    """Return the hands an order passes in the relay, front desk first, worker last."""
    if urgency == "P1":
        return ("front_desk", department, "worker")
    if department == "residents_committee":
        return ("front_desk", "residents_committee", "worker")
    if department == "property":
        return ("front_desk", "residents_committee", "property", "worker")
    return ("front_desk", "residents_committee", "property", f"{department}_head", "worker")


def relay_order(*, department: str, urgency: str, created_at: datetime,
                rng: random.Random) -> tuple[int, float]:
    """Return (hand-offs, minutes until the worker has it) for one order in the relay."""
    at, hops = created_at, 0
    for _ in relay_path(department, urgency)[1:]:
        for _step in range(2 if rng.random() < RELAY_WRONG_SHARE else 1):
            hops += 1
            if urgency == "P1":
                at += timedelta(minutes=rng.triangular(*RELAY_P1_MINUTES))
            else:
                at = add_working_hours(at, rng.uniform(*RELAY_HANDOFF_HOURS))
    return hops, (at - created_at).total_seconds() / 60


def next_on_shift(staff: Any, at: datetime, *, step_minutes: int = 5,
                  horizon_days: int = 8) -> datetime | None:
    """Return the first moment at or after `at` when the person works, or None."""
    if staff.on_shift(at):
        return at
    # Shifts start on the hour or half hour: a 5-minute grid meets them exactly.
    moment = at.replace(second=0, microsecond=0)
    moment += timedelta(minutes=(-moment.minute) % step_minutes or step_minutes)
    end = at + timedelta(days=horizon_days)
    while moment <= end:
        if staff.on_shift(moment):
            return moment
        moment += timedelta(minutes=step_minutes)
    return None


def stats(values: Sequence[float]) -> dict[str, float | None]:
    """Return mean, p50, p95 and max of a sample (None when empty)."""
    from routing.metrics import percentile

    return {"mean": _round(statistics.fmean(values)) if values else None,
            "p50": _round(percentile(values, 50)), "p95": _round(percentile(values, 95)),
            "max": _round(max(values)) if values else None}


def verdict(value: float | None, target: float, *, higher_is_better: bool) -> str:
    """Say pass or miss for a measured value against its target (n/a when unmeasured)."""
    if value is None:
        return "n/a"
    return "pass" if (value >= target if higher_is_better else value <= target) else "miss"


def spread(counts: Mapping[str, int], people: Sequence[str]) -> dict[str, Any]:
    """Return max/min/stdev of orders per person, people with none counting as zero."""
    values = [counts.get(p, 0) for p in people]
    if not values:
        return {"people": 0, "max": None, "min": None, "stdev": None, "idle": 0}
    return {"people": len(values), "max": max(values), "min": min(values),
            "stdev": _round(statistics.pstdev(values)), "idle": sum(v == 0 for v in values)}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _draw(rng: random.Random, spec: Spec) -> timedelta:
    low, high, mode = spec
    return timedelta(minutes=rng.triangular(low, high, mode))


# ---------------------------------------------------------------- the classifier's view


def labelled_pool(catalogue: Any) -> tuple[dict[str, list[Labelled]], dict[str, Any]]:
    """Train the request classifier as bench-classifier does and label the held-out reports."""
    from bot.bench_classifier import LinliClassifier, production_settings
    from bot.evaluation import load_examples

    config, dictionaries = production_settings()
    training = [pair for path in sorted((ROOT / "data" / "nlu").glob("*.yml"))
                for pair in load_examples(path)]
    if not training:
        raise BenchError("no training examples in data/nlu/*.yml")
    model = LinliClassifier(config, dictionaries)
    model.fit([text for text, _ in training], [label for _, label in training])
    pool: dict[str, list[Labelled]] = {}
    for text, label in load_examples(HELDOUT):
        if not label.startswith(REPORT_PREFIX):
            continue
        routed, ranking, urgency, reason = category_view(
            model.labels, model.scores(text).tolist(), text, config=config,
            default_urgency=lambda c: catalogue.category(c).urgency)
        routed = routed if catalogue.has_category(routed) else "other"  # as triage does
        truth = label.removeprefix(REPORT_PREFIX)
        pool.setdefault(truth, []).append(Labelled(text, truth, routed, ranking, urgency, reason))
    samples = [s for group in pool.values() for s in group]
    if not samples:
        raise BenchError(f"{HELDOUT}: no report_* sentences to simulate orders with")
    same_lead = sum(catalogue.category(s.routed).lead == catalogue.category(s.category).lead
                    for s in samples)
    return pool, {
        "training_examples": len(training), "heldout_report_sentences": len(samples),
        "category_accuracy": _round(sum(s.routed == s.category for s in samples) / len(samples)),
        "lead_department_accuracy": _round(same_lead / len(samples)),
    }


# ---------------------------------------------------------------- one simulated month


@dataclass
class RunCounters:
    returns: int = 0
    arbitrations: int = 0
    stranded: int = 0  # returned with nowhere left to go (awaiting an agent)
    side_blocked: int = 0  # assist/verify actions refused because the ticket was resolved
    learn_refreshes: int = 0
    learned_rules: int = 0
    unstaffed: int = 0  # nobody who could act is ever on shift


@dataclass
class MonthRun:
    """Drive one month of orders through the real services, event by event, in sim time."""

    app: Any
    orders: Sequence[SimOrder]
    learning: bool
    days: int
    time_decisions: bool = False
    counters: RunCounters = field(default_factory=RunCounters)
    clock: datetime = SIM_START
    decision_ms: list[float] = field(default_factory=list)
    by_ticket: dict[int, SimOrder] = field(default_factory=dict)
    _queue: list[tuple[datetime, int, str, tuple[Any, ...]]] = field(default_factory=list)
    _seq: int = 0
    _learned: Any = None
    _rngs: dict[int, random.Random] = field(default_factory=dict)
    _arbitrated: set[int] = field(default_factory=set)

    def run(self) -> None:
        """Play every event in time order until nothing is left to do."""
        if self.learning:  # pushed first: at midnight the refresh precedes any order
            for day in range(self.days + 1):
                self._push((SIM_START + timedelta(days=day)).astimezone(UTC), "learn")
        for order in self.orders:
            self._push(order.created_at, "create", order)
        while self._queue:
            at, _, kind, payload = heapq.heappop(self._queue)
            self.clock = at
            getattr(self, f"_on_{kind}")(at, *payload)

    def _push(self, at: datetime, kind: str, *payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def _rng(self, order: SimOrder) -> random.Random:
        # One stream per order: both runs draw the same delays while their paths agree.
        return self._rngs.setdefault(order.index, random.Random(f"order:{order.index}"))

    def _actor(self, department: str, assignee: str | None, order: SimOrder,
               at: datetime) -> tuple[datetime, str] | None:
        """Return when and who acts on an order: its assignee, or the first one on shift."""
        roster = self.app.roster
        if assignee:
            people = [roster.member(assignee)]
        elif department == "grid":
            people = list(roster.grid_workers(roster.grid_for_building(order.building).id))
        else:
            people = [p for p in roster.members(department) if p.role != "director"]
        best: tuple[datetime, str] | None = None
        for person in people:
            when = next_on_shift(person, at)
            if when is not None and (best is None or when < best[0]):
                best = (when, person.id)
        if best is not None and best[0] > at:
            best = (best[0] + _draw(self._rng(order), SHIFT_START_SLACK), best[1])
        return best

    def _later(self, staff_id: str, at: datetime, order: SimOrder) -> datetime:
        found = self._actor("", staff_id, order, at)
        return at if found is None else found[0]

    def _schedule(self, kind: str, order_id: int, department: str, assignee: str | None,
                  order: SimOrder, at: datetime) -> None:
        delay = _draw(self._rng(order), ACCEPT_MINUTES[order.sample.urgency])
        found = self._actor(department, assignee, order, at + delay)
        if found is None:
            self.counters.unstaffed += 1
            return
        self._push(found[0], kind, order_id, found[1], order)

    def _session(self) -> Any:
        from bot.db import session_scope

        return session_scope(self.app.sessions)

    def _on_learn(self, at: datetime) -> None:
        from bot.dispatch import load_learned_routes

        with self._session() as session:
            self._learned = load_learned_routes(session, roster=self.app.roster)
        self.counters.learn_refreshes += 1
        self.counters.learned_rules = len(self._learned.rules)

    def _on_create(self, at: datetime, order: SimOrder) -> None:
        from bot.dispatch import dispatch_ticket, order_load, ticket_facts
        from bot.tickets import create_ticket
        from routing.dispatch import plan_dispatch

        app, sample = self.app, order.sample
        with self._session() as session:
            ticket = create_ticket(
                session, now=at, category=sample.routed, description=sample.text,
                channel=order.channel, building=order.building, urgency=sample.urgency,
                urgency_reason=sample.urgency_reason, catalogue=app.catalogue)
            if self.time_decisions:  # the decision alone, on the live loads and rules
                open_load, assigned = order_load(session)
                facts = ticket_facts(ticket, roster=app.roster, ranking=sample.ranking)
                for timed in [False] * DECISION_WARMUP * (not self.decision_ms) + [True]:
                    started = time.perf_counter_ns()
                    plan_dispatch(ticket=facts, catalogue=app.catalogue, roster=app.roster,
                                  open_load=open_load, assigned_total=assigned,
                                  learned=self._learned, now=at)
                    if timed:
                        self.decision_ms.append((time.perf_counter_ns() - started) / 1e6)
            dispatch_ticket(session, ticket=ticket, catalogue=app.catalogue, roster=app.roster,
                            now=at, ranking=sample.ranking, learned=self._learned)
            created = [(o.id, o.role, o.department, o.assignee) for o in ticket.work_orders]
            self.by_ticket[ticket.id] = order
        for order_id, role, department, assignee in created:
            self._schedule("lead" if role == "lead" else "side", order_id, department,
                           assignee, order, at)

    def _on_lead(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.models import WorkOrder
        from bot.staff import accept_order, return_order

        moved = None
        with self._session() as session:
            row = session.get(WorkOrder, order_id)
            if row is None or row.status != "open":
                return
            accepted = row.department == order.owner or order_id in self._arbitrated
            if accepted:
                accept_order(session, order_id=order_id, staff_id=staff_id,
                             roster=self.app.roster, now=at)
            else:
                outcome = return_order(
                    session, order_id=order_id, staff_id=staff_id, reason="not_our_function",
                    note="非本部门职能", roster=self.app.roster, catalogue=self.app.catalogue,
                    now=at, learned=self._learned)
                new = outcome.new_order
                if new is not None:
                    moved = (new.id, new.department, new.assignee, outcome.arbitration)
        if accepted:
            on_site = at + _draw(self._rng(order), ON_SITE_MINUTES[order.sample.urgency])
            self._push(self._later(staff_id, on_site, order), "progress", order_id, staff_id,
                       order)
            return
        self.counters.returns += 1
        if moved is None:
            self.counters.stranded += 1
            return
        new_id, department, assignee, arbitration = moved
        if arbitration:
            self.counters.arbitrations += 1
            self._arbitrated.add(new_id)
        self._schedule("lead", new_id, department, assignee, order, at)

    def _on_progress(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.staff import add_progress

        with self._session() as session:
            add_progress(session, order_id=order_id, staff_id=staff_id, text="已到现场查看",
                         roster=self.app.roster, now=at)
        work = _draw(self._rng(order), WORK_MINUTES[order.sample.urgency])
        if order_id in self._arbitrated:
            work += _draw(self._rng(order), COORDINATION_MINUTES)
        self._push(self._later(staff_id, at + work, order), "resolve", order_id, staff_id,
                   order)

    def _on_resolve(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.staff import resolve_order

        with self._session() as session:
            resolve_order(session, order_id=order_id, staff_id=staff_id, note="已处理完毕",
                          roster=self.app.roster, now=at)

    def _on_side(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.staff import StaffActionError, accept_order

        try:
            with self._session() as session:
                accept_order(session, order_id=order_id, staff_id=staff_id,
                             roster=self.app.roster, now=at)
        except StaffActionError:
            self.counters.side_blocked += 1
            return
        done = self._later(staff_id, at + _draw(self._rng(order), SIDE_WORK_MINUTES), order)
        self._push(done, "side_done", order_id, staff_id, order)

    def _on_side_done(self, at: datetime, order_id: int, staff_id: str,
                      order: SimOrder) -> None:
        from bot.staff import StaffActionError, resolve_order

        try:
            with self._session() as session:
                resolve_order(session, order_id=order_id, staff_id=staff_id, note="协办完成",
                              roster=self.app.roster, now=at)
        except StaffActionError:
            self.counters.side_blocked += 1


# ---------------------------------------------------------------- measuring a run


def collect_run(run: MonthRun) -> dict[str, Any]:
    """Read every ticket back from the store and measure the month."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from bot.dispatch import hop_count
    from bot.models import ACTIVE_ORDER_STATUSES, Ticket
    from bot.ticket_view import ticket_timeline
    from routing.metrics import OrderRecord, summarize
    from routing.sla import deadlines, met_on_time

    catalogue, roster = run.app.catalogue, run.app.roster
    records: list[OrderRecord] = []
    to_owner: list[float] = []
    p1_queued: list[float] = []
    left_active = misfiled = learned_led = learned_right = runner_up_ignored = 0
    held: Counter[str] = Counter()
    with run._session() as session:
        tickets = session.execute(
            select(Ticket).options(selectinload(Ticket.events), selectinload(Ticket.work_orders))
            .order_by(Ticket.id)).scalars().all()
        for ticket in tickets:
            order = run.by_ticket[ticket.id]
            timeline = ticket_timeline(ticket)
            leads = sorted((o for o in ticket.work_orders if o.role == "lead"),
                           key=lambda o: (o.attempt, o.id))
            owner = next((o for o in reversed(leads) if o.status == "resolved"), None)
            if owner is not None:
                to_owner.append((owner.created_at - ticket.created_at).total_seconds() / 60)
            misfiled += catalogue.category(ticket.category).lead != order.owner
            dispatched = next(e for e in ticket.events if e.kind == "dispatched").data
            if "lead_department" in dispatched:
                learned_led += 1
                learned_right += leads[0].department == order.owner
            queued = any(o["role"] == "lead" and o["assignee"] is None
                         for o in dispatched["orders"])  # accepting sets the assignee later
            if ticket.urgency == "P1" and queued and timeline.first_response_at:
                p1_queued.append((timeline.first_response_at - ticket.created_at).total_seconds()
                                 / 60)
            left_active += sum(o.status in ACTIVE_ORDER_STATUSES for o in ticket.work_orders)
            runner_up = [c for c, _ in order.sample.ranking[1:2] if catalogue.has_category(c)]
            if (len(leads) > 1 and leads[1].department != order.owner and runner_up
                    and catalogue.category(runner_up[0]).lead == order.owner):
                runner_up_ignored += 1  # the classifier's second guess named the owner
            met = {d.stage: met_on_time(deadline=d, timeline=timeline, now=run.clock)
                   for d in deadlines(urgency=ticket.urgency, created_at=ticket.created_at,
                                      catalogue=catalogue)}
            assignees = tuple(dict.fromkeys(o.assignee for o in ticket.work_orders
                                            if o.assignee))
            held.update(assignees)
            records.append(OrderRecord(
                number=ticket.number, category=ticket.category, channel=ticket.channel,
                grid=roster.grid_for_building(ticket.building).id, created_at=ticket.created_at,
                urgency=ticket.urgency, hops=hop_count(ticket), first_lead=leads[0].department,
                final_owner=owner.department if owner is not None else None,
                dispatched_at=timeline.dispatched_at,
                first_response_at=timeline.first_response_at, resolved_at=timeline.resolved_at,
                assignees=assignees, sla_met={k: v for k, v in met.items() if v is not None}))
    front_line = [p for p in roster.staff if p.role in ("worker", "grid_worker")]
    return {
        "summary": summarize(records),
        "by_urgency": {u: {k: s[k] for k in ("count", "hops", "first_time_right", "sla")}
                       for u in sorted({r.urgency for r in records})
                       for s in [summarize([r for r in records if r.urgency == u])]},
        "minutes_to_right_owner": stats(to_owner),
        "unresolved_at_end": len(tickets) - len(to_owner),
        "filed_under_wrong_lead": misfiled,
        "led_by_learned_rule": {"orders": learned_led, "right_department": learned_right},
        "p1_lead_queued": {"orders": len(p1_queued), "minutes_to_first_response": stats(p1_queued)},
        "orders_left_active_on_finished_tickets": left_active,
        "second_hop_missed_the_runner_up_owner": runner_up_ignored,
        "counters": vars(run.counters).copy(),
        "load_front_line": spread(held, [p.id for p in front_line]),
        "load_front_line_by_department": {
            d: spread(held, [p.id for p in front_line if p.department == d])
            for d in sorted({p.department for p in front_line})},
        "orders_held_per_person": dict(held.most_common()),
        "decision_ms": stats(run.decision_ms) if run.time_decisions else None,
        "simulated_until": run.clock.astimezone(LOCAL).isoformat(),
    }


def fresh_app(path: Path) -> Any:
    """Migrate a new SQLite file and build the App on it."""
    from bot.app import build_app
    from bot.migrate import upgrade
    from bot.settings import Secret, Settings

    url = f"sqlite:///{path}"
    upgrade(url)
    return build_app(Settings(database_url=Secret(url)))


def simulate(orders: Sequence[SimOrder], *, days: int, learning: bool, path: Path,
             time_decisions: bool = False) -> dict[str, Any]:
    """Run the month on a fresh migrated SQLite file and return its measures."""
    app = fresh_app(path)
    # An idle connection held open stops SQLite checkpointing the WAL every time the
    # engine's NullPool closes its last connection: faster, and no result changes.
    keeper = app.engine.connect()
    started = time.perf_counter()
    try:
        run = MonthRun(app=app, orders=orders, learning=learning, days=days,
                       time_decisions=time_decisions)
        run.run()
        measured = collect_run(run)
    finally:
        keeper.close()
        app.engine.dispose()
    measured["wall_seconds"] = _round(time.perf_counter() - started)
    return measured


# ---------------------------------------------------------------- baseline and speed


def relay_baseline(orders: Sequence[SimOrder], *, catalogue: Any, seed: int) -> dict[str, Any]:
    """Run the same orders through today's hand-by-hand relay."""
    hops: list[float] = []
    minutes: list[float] = []
    detoured = 0
    for order in orders:
        # People read the words: the true category's urgency, or P1 when life is at risk.
        urgency = ("P1" if order.sample.urgency == "P1"
                   else catalogue.category(order.sample.category).urgency)
        count, waited = relay_order(department=order.owner, urgency=urgency,
                                    created_at=order.created_at,
                                    rng=random.Random(f"relay:{seed}:{order.index}"))
        detoured += count > len(relay_path(order.owner, urgency)) - 1
        hops.append(float(count))
        minutes.append(waited)
    return {"orders": len(orders), "hops": stats(hops),
            "share_with_a_wrong_office": _round(detoured / len(orders)) if orders else None,
            "minutes_to_dispatch": stats(minutes)}


def throughput(orders: Sequence[SimOrder], *, count: int, batch: int, path: Path
               ) -> dict[str, Any]:
    """Create, dispatch and commit `count` orders in one process; return orders per second."""
    from sqlalchemy import func, select

    from bot.dispatch import dispatch_ticket
    from bot.models import Ticket
    from bot.tickets import create_ticket

    app = fresh_app(path)
    start = SIM_START.astimezone(UTC) + timedelta(hours=8)
    phases = {"create": 0.0, "dispatch": 0.0, "commit": 0.0}
    session = None
    started = time.perf_counter()
    for i in range(count):
        order = orders[i % len(orders)]
        now = start + timedelta(seconds=20 * i)
        if session is None:
            session = app.sessions()
        t0 = time.perf_counter()
        ticket = create_ticket(session, now=now, category=order.sample.routed,
                               description=order.sample.text, channel=order.channel,
                               building=order.building, urgency=order.sample.urgency,
                               catalogue=app.catalogue)
        t1 = time.perf_counter()
        dispatch_ticket(session, ticket=ticket, catalogue=app.catalogue, roster=app.roster,
                        now=now, ranking=order.sample.ranking)
        t2 = time.perf_counter()
        if (i + 1) % batch == 0 or i + 1 == count:
            session.commit()
            session.close()  # with NullPool this closes the SQLite connection too
            session = None
        phases["create"] += t1 - t0
        phases["dispatch"] += t2 - t1
        phases["commit"] += time.perf_counter() - t2
    seconds = time.perf_counter() - started
    with app.sessions() as check:
        stored = check.execute(select(func.count()).select_from(Ticket)).scalar_one()
    pool = type(app.engine.pool).__name__
    app.engine.dispose()
    if stored != count:
        raise BenchError(f"throughput run stored {stored} tickets, expected {count}")
    return {"orders": count, "commit_every": batch, "seconds": _round(seconds),
            "orders_per_second": _round(count / seconds, 1), "engine_pool": pool,
            "ms_per_order": {k: _round(v * 1000 / count) for k, v in phases.items()}}


# ---------------------------------------------------------------- report


def _at(data: Any, *path: str) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data


def target_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return one row per figure: target, both engine runs with pass/miss, relay and ratio."""
    runs, relay = report["runs"], report["relay"]
    rows: list[dict[str, Any]] = []

    def add(metric: str, target: str, path: Sequence[str], *, check: tuple[float, bool] | None
            = None, relay_value: float | None = None, digits: int = 3, ratio: bool = True
            ) -> None:
        values = {name: _round(_at(run, *path), digits) for name, run in runs.items()}
        verdicts = {name: verdict(v, check[0], higher_is_better=check[1])
                    if check and v is not None else "—" for name, v in values.items()}
        ratio = (_round(values["learning"] / relay_value) if ratio and relay_value
                 and values.get("learning") is not None else None)
        rows.append({"metric": metric, "target": target, "values": values,
                     "verdicts": verdicts, "relay": relay_value, "engine_over_relay": ratio})

    add("orders", "—", ("summary", "count"), relay_value=relay["orders"], ratio=False)
    add("hops mean", f"≤ {TARGET_HOPS_MEAN}", ("summary", "hops", "mean"),
        check=(TARGET_HOPS_MEAN, False), relay_value=relay["hops"]["mean"])
    add("hops p95", f"≤ {TARGET_HOPS_P95:g}", ("summary", "hops", "p95"),
        check=(TARGET_HOPS_P95, False), relay_value=relay["hops"]["p95"])
    add("first-time-right (relay: no wrong office)", "no target",
        ("summary", "first_time_right"), relay_value=_round(1 - relay["share_with_a_wrong_office"]))
    for label, path in (("min to dispatch", ("summary", "minutes_to_dispatch")),
                        ("min until the owner has it", ("minutes_to_right_owner",))):
        for q in ("p50", "p95"):
            add(f"{label} {q} (relay: worker has it)", "no target", (*path, q),
                relay_value=relay["minutes_to_dispatch"][q], digits=1)
    for stage, label in (("first_response", "first response"), ("resolution", "resolution")):
        for q in ("p50", "p95"):
            add(f"min to {label} {q}", "SLA per urgency ↓", ("summary", f"minutes_to_{stage}", q),
                digits=1)
    for stage in ("dispatch", "first_response", "on_site", "resolve"):
        add(f"SLA {stage} met", f"≥ {TARGET_SLA_RATE:.0%} (assumed)",
            ("summary", "sla", stage, "rate"), check=(TARGET_SLA_RATE, True))
    for stat in ("max", "min", "stdev"):
        add(f"orders per front-line worker {stat}", "no target", ("load_front_line", stat))
    for stat in ("max", "min", "stdev"):
        add(f"orders per staff member with any {stat}", "no target", ("summary", "load", stat))
    add("plan_dispatch ms p50", "—", ("decision_ms", "p50"))
    add("plan_dispatch ms p95", f"≤ {TARGET_DECISION_P95_MS:g}", ("decision_ms", "p95"),
        check=(TARGET_DECISION_P95_MS, False))
    for item in report.get("throughput", []):
        value = item["orders_per_second"]
        rows.append({"metric": f"orders/s created+dispatched+committed, commit every "
                               f"{item['commit_every']}",
                     "target": f"≥ {TARGET_THROUGHPUT_PER_S:g}", "values": {"learning": value},
                     "verdicts": {"learning": verdict(value, TARGET_THROUGHPUT_PER_S,
                                                      higher_is_better=True)},
                     "relay": None, "engine_over_relay": None})
    return rows


def _cell(value: Any) -> str:
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def render_markdown(report: Mapping[str, Any]) -> str:
    """Return the report as a Markdown table with a few lines of context."""
    config, classifier, effect = report["config"], report["classifier"], report["learning_effect"]
    lines = [
        f"## Routing bench — {config['orders']} orders, {config['days']} simulated days, "
        f"seed {config['seed']}",
        "",
        "| figure | target | with learning | | without learning | | relay | engine ÷ relay |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["targets"]:
        values, verdicts = row["values"], row["verdicts"]
        lines.append(
            f"| {row['metric']} | {row['target']} | {_cell(values.get('learning'))} | "
            f"{verdicts.get('learning', '')} | {_cell(values.get('no_learning'))} | "
            f"{verdicts.get('no_learning', '')} | {_cell(row['relay'])} | "
            f"{_cell(row['engine_over_relay'])} |")
    lines += [
        "",
        f"- Classifier on {classifier['heldout_report_sentences']} held-out report sentences: "
        f"category accuracy {classifier['category_accuracy']}, right lead department "
        f"{classifier['lead_department_accuracy']}.",
        f"- Learning (with − without): hops mean {_cell(effect['hops_mean_delta'])}, "
        f"first-time-right {_cell(effect['first_time_right_delta'])}; returns "
        f"{effect['returns']['learning']} vs {effect['returns']['no_learning']}; "
        f"{effect['led_by_learned_rule']['orders']} orders led by a learned rule "
        f"({effect['led_by_learned_rule']['right_department']} to the right department).",
    ]
    for name, run in report["runs"].items():
        c, sla = run["counters"], run["by_urgency"]
        by = ", ".join(f"{u} {_cell(_round(_at(s, 'sla', 'first_response', 'rate')))}/"
                       f"{_cell(_round(_at(s, 'sla', 'resolve', 'rate')))}" for u, s in sla.items())
        lines.append(
            f"- {name}: {c['returns']} returns, {c['arbitrations']} arbitrations, "
            f"{c['stranded']} stranded, {run['unresolved_at_end']} unresolved, "
            f"{run['second_hop_missed_the_runner_up_owner']} second hops that skipped the "
            f"classifier's runner-up although it named the owner; SLA first "
            f"response/resolve by urgency: {by}; P1 leads queued (nobody on shift): "
            f"{run['p1_lead_queued']['orders']}; orders left active on finished tickets: "
            f"{run['orders_left_active_on_finished_tickets']}; {run['wall_seconds']} s.")
    for item in report.get("throughput", []):
        lines.append(f"- Throughput, commit every {item['commit_every']}: ms per order "
                     f"{item['ms_per_order']} ({item['engine_pool']} engine).")
    return "\n".join(lines)


# ---------------------------------------------------------------- entry point


def run_bench(args: argparse.Namespace, note: Callable[[str], None]) -> dict[str, Any]:
    """Run every part of the benchmark and return the report."""
    from bot.community import load_community
    from routing.catalogue import load_catalogue
    from routing.roster import load_roster

    catalogue = load_catalogue()
    community = load_community()
    buildings = [b.number for b in community.buildings]
    roster = load_roster(catalogue=catalogue, buildings=buildings)
    note("training the request classifier and labelling the held-out sentences")
    pool, classifier = labelled_pool(catalogue)

    def owner_of(category: str, building: str) -> str:
        grid = roster.grid_for_building(building).id
        return LOCAL_OWNERS.get((category, grid), catalogue.category(category).lead)

    orders = plan_orders(days=args.days, per_day=args.orders_per_day, seed=args.seed,
                         pool=pool, buildings=buildings, owner_of=owner_of,
                         lift_buildings=[b.number for b in community.buildings if b.floors > 6])
    if not orders:
        raise BenchError("no orders drawn; raise --orders-per-day or --days")
    report: dict[str, Any] = {
        "config": {"days": args.days, "orders_per_day": args.orders_per_day, "seed": args.seed,
                   "orders": len(orders), "start": SIM_START.isoformat(),
                   "category_mix": dict(CATEGORY_MIX),
                   "local_owners": {f"{c}@{g}": d for (c, g), d in LOCAL_OWNERS.items()},
                   "orders_owned_locally": sum(o.owner != catalogue.category(
                       o.sample.category).lead for o in orders),
                   "relay_wrong_share": RELAY_WRONG_SHARE, "accept_minutes": ACCEPT_MINUTES,
                   "on_site_minutes": ON_SITE_MINUTES, "work_minutes": WORK_MINUTES},
        "classifier": classifier,
    }
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as folder:
        workdir = Path(folder)
        note(f"simulating {len(orders)} orders with and without learned routes (2 processes)")
        # Independent runs: a process each halves the wall time. plan_dispatch is timed in
        # the learning run, on the loads and rules of the moment.
        with ProcessPoolExecutor(max_workers=2,
                                 mp_context=multiprocessing.get_context("spawn")) as workers:
            jobs = {name: workers.submit(simulate, orders, days=args.days,
                                         learning=name == "learning", time_decisions=name ==
                                         "learning", path=workdir / f"{name}.db")
                    for name in ("learning", "no_learning")}
            report["runs"] = {name: job.result() for name, job in jobs.items()}
        report["throughput"] = []
        for batch in (1, THROUGHPUT_BATCH) if args.throughput_orders else ():
            note(f"throughput: {args.throughput_orders} orders, commit every {batch}")
            report["throughput"].append(throughput(orders, count=args.throughput_orders,
                                                   batch=batch, path=workdir / f"tp{batch}.db"))
    report["relay"] = relay_baseline(orders, catalogue=catalogue, seed=args.seed)
    with_, without = report["runs"]["learning"], report["runs"]["no_learning"]
    report["learning_effect"] = {
        "hops_mean_delta": _delta(_at(with_, "summary", "hops", "mean"),
                                  _at(without, "summary", "hops", "mean")),
        "first_time_right_delta": _delta(_at(with_, "summary", "first_time_right"),
                                         _at(without, "summary", "first_time_right")),
        "returns": {"learning": with_["counters"]["returns"],
                    "no_learning": without["counters"]["returns"]},
        "led_by_learned_rule": with_["led_by_learned_rule"],
        "rules_at_end": with_["counters"]["learned_rules"],
    }
    report["targets"] = target_rows(report)
    return report


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else _round(a - b, 4)


def _number(kind: Callable[[str], Any], *, minimum: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bot bench-routing",
        description="Simulate a month of the demo community's orders through the real routing "
        "engine and store, compare with the hand-by-hand relay, and report each figure "
        "against its target.")
    parser.add_argument("--days", type=_number(int, minimum=1), default=30)
    parser.add_argument("--orders-per-day", type=_number(float, minimum=0.1), default=40.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("var/bench/routing.json"),
                        help="where the JSON report goes (relative to the current directory)")
    parser.add_argument("--throughput-orders", type=_number(int, minimum=0), default=3000,
                        help="orders for each SQLite throughput run; 0 skips them")
    return parser


def main(argv: list[str]) -> int:
    """Run the routing benchmark; write the JSON report and print the Markdown table."""
    args = build_parser().parse_args(argv)

    def note(message: str) -> None:
        print(f"bench-routing: {message}", file=sys.stderr, flush=True)

    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-cache messages are noise here
    started = time.perf_counter()
    try:
        report = run_bench(args, note)
    except BenchError as exc:
        note(str(exc))
        return 2
    report["wall_seconds"] = _round(time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(render_markdown(report))
    print(f"\nfull report: {args.out} ({report['wall_seconds']} s)")
    return 0
