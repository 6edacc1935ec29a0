"""Routing benchmark: a simulated month of the demo community's orders through the real engine.

    python -m bot bench-routing [--days 30] [--orders-per-day 40] [--seed 42]
        [--out var/bench/routing.json] [--throughput-orders 3000]

Every order is created, dispatched, accepted, returned, progressed and resolved by the real
services (bot.tickets, bot.dispatch, bot.staff) on a fresh, migrated SQLite file, with a
simulated clock: nothing sleeps. The month runs twice on the same orders, with learned routes
(refreshed each simulated midnight) and without, and is compared with today's hand-by-hand
relay. Target misses are reported, not fatal.

Simulation assumptions (the figures depend on them; change them here, not in the engine):
* Month: 30 days from Monday 30 Nov 2026 (heating season), ~orders-per-day a day (Poisson,
  busier Mondays, quieter weekends), created mostly 7-11 h and 17-21 h local time.
* Category mix: repairs dominate (see CATEGORY_MIX); lift categories only in buildings with
  more than six floors; the text of each order is a held-out sentence of its true category,
  and its ranking, routed category and urgency come from the real classifier and safety
  rules, so misclassifications are the model's own.
* Staff: the assignee (or, for a queue order, the first on-shift member; never the director)
  acts after a per-urgency delay, and only while on shift. A department that is not the
  true category's catalogue lead returns the lead order as not_our_function, except that an
  arbitration (兜底) department coordinates and resolves it itself. Assist and verify
  orders are accepted and finished by their department whatever the category.
* Relay baseline: front desk → residents' committee → property office → department head →
  worker, cut short when an office on the way is the owner; each hand-off takes 0.5-4
  working hours (Mon-Fri 08:30-17:30) and with RELAY_WRONG_SHARE goes to a wrong office
  first (one more hand-off), so 4 hand-offs + 3 detours is the documented 7-hop case.
  Life-safety (P1) orders are phoned straight to the on-duty department (2-15 min a hop).
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

# Relative weights of true categories in a winter month.
CATEGORY_MIX: Mapping[str, float] = {
    "water_leak": 14, "public_facility": 12, "heating": 10, "elevator_fault": 9,
    "sanitation": 8, "parking": 7, "neighbor_noise": 6, "fire_hazard": 4, "water_outage": 3,
    "power_outage": 3, "property_fee": 3, "pet_nuisance": 3, "elderly_care": 3,
    "garbage_sorting": 2, "neighbor_dispute": 2, "medical_service": 2,
    "government_service": 2, "public_security": 2, "greening_pest": 1,
    "illegal_construction": 1, "construction_noise": 1, "elevator_trapped": 1, "gas_leak": 1,
    "other": 1,
}
LIFT_CATEGORIES = frozenset({"elevator_fault", "elevator_trapped"})
# Orders created per local hour 0..23: morning and evening peaks, little at night.
HOUR_WEIGHTS: tuple[float, ...] = (
    0.3, 0.2, 0.1, 0.1, 0.1, 0.3, 1.0, 3.0, 6.0, 7.0, 6.5, 5.0,
    3.5, 3.5, 4.0, 4.0, 4.0, 4.5, 5.5, 6.0, 5.0, 3.0, 1.5, 0.7,
)
WEEKDAY_FACTOR: tuple[float, ...] = (1.15, 1.05, 1.0, 1.0, 1.0, 0.9, 0.9)
CHANNEL_MIX: Mapping[str, float] = {"wechat": 45, "voice": 25, "sms": 15, "web": 15}

# Delays in minutes as (low, high, mode) of a triangular draw, per urgency.
ACCEPT_MINUTES = {"P1": (1, 4, 2), "P2": (3, 40, 10), "P3": (10, 150, 40), "P4": (30, 720, 180)}
ON_SITE_MINUTES = {"P1": (5, 25, 12), "P2": (15, 180, 45), "P3": (30, 1440, 240),
                   "P4": (60, 2880, 720)}
WORK_MINUTES = {"P1": (20, 180, 60), "P2": (30, 900, 180), "P3": (60, 2880, 480),
                "P4": (120, 7200, 1440)}
SIDE_WORK_MINUTES = (20, 480, 90)  # an assist or verify order, from acceptance to done
COORDINATION_MINUTES = (30, 240, 90)  # arbitration: getting the right people to act
SHIFT_START_SLACK = (2, 15, 5)  # someone coming on shift gets to a waiting order

RELAY_WRONG_SHARE = 0.2
RELAY_HANDOFF_HOURS = (0.5, 4.0)
RELAY_P1_MINUTES = (2, 15, 5)
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
    routed: str  # the category the order is filed under
    ranking: tuple[tuple[str, float], ...]  # best first; routed is first
    urgency: str
    urgency_reason: str | None


@dataclass(frozen=True)
class SimOrder:
    index: int
    created_at: datetime  # aware, UTC
    building: str
    channel: str
    sample: Labelled

    @property
    def rng_seed(self) -> str:
        return f"order:{self.index}"


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


def daily_counts(*, days: int, per_day: float, rng: random.Random,
                 start: datetime = SIM_START) -> list[int]:
    """Return how many orders each simulated day gets."""
    return [poisson(rng, per_day * WEEKDAY_FACTOR[(start + timedelta(days=d)).weekday()])
            for d in range(days)]


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def plan_orders(*, days: int, per_day: float, seed: int,
                pool: Mapping[str, Sequence[Labelled]], lift_buildings: Sequence[str],
                buildings: Sequence[str], start: datetime = SIM_START) -> list[SimOrder]:
    """Draw the month's orders, oldest first: time, category, text, building, channel."""
    rng = random.Random(f"orders:{seed}")
    mix = {c: w for c, w in CATEGORY_MIX.items() if pool.get(c)}
    if not mix:
        raise BenchError("no held-out sentence for any category of the mix; check "
                         f"{HELDOUT.relative_to(ROOT)}")
    drafts: list[tuple[datetime, str, str, str, Labelled]] = []
    for day, count in enumerate(daily_counts(days=days, per_day=per_day, rng=rng, start=start)):
        midnight = start + timedelta(days=day)
        for _ in range(count):
            hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
            at = midnight + timedelta(hours=hour, seconds=rng.randrange(3600))
            category = _pick(rng, mix)
            places = lift_buildings if category in LIFT_CATEGORIES else buildings
            drafts.append((at.astimezone(UTC), category, rng.choice(list(places)),
                           _pick(rng, CHANNEL_MIX), rng.choice(list(pool[category]))))
    drafts.sort(key=lambda d: d[0])
    return [SimOrder(i, at, building, channel, sample)
            for i, (at, _category, building, channel, sample) in enumerate(drafts)]


def _in_office(local: datetime) -> bool:
    return local.weekday() in OFFICE_DAYS and OFFICE_OPEN <= local.time() < OFFICE_CLOSE


def _next_opening(local: datetime) -> datetime:
    day = local.replace(hour=OFFICE_OPEN.hour, minute=OFFICE_OPEN.minute, second=0,
                        microsecond=0)
    if local.time() >= OFFICE_OPEN:
        day += timedelta(days=1)
    while day.weekday() not in OFFICE_DAYS:
        day += timedelta(days=1)
    return day


def add_working_hours(start: datetime, hours: float) -> datetime:
    """Return the moment `hours` of office time (Mon-Fri 08:30-17:30 local) after start."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if hours < 0:
        raise ValueError(f"hours must be >= 0, got {hours}")
    at = start.astimezone(LOCAL)
    left = timedelta(hours=hours)
    while True:
        if not _in_office(at):
            at = _next_opening(at)
        closing = at.replace(hour=OFFICE_CLOSE.hour, minute=OFFICE_CLOSE.minute, second=0,
                             microsecond=0)
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
    at = created_at
    hops = 0
    for _ in relay_path(department, urgency)[1:]:
        detours = 1 if rng.random() < RELAY_WRONG_SHARE else 0
        for _step in range(1 + detours):
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
    step = timedelta(minutes=step_minutes)
    # Shifts start on the hour or half hour: stepping on a 5-minute grid meets them exactly.
    moment = at.replace(second=0, microsecond=0)
    moment += timedelta(minutes=(-moment.minute) % step_minutes or step_minutes)
    end = at + timedelta(days=horizon_days)
    while moment <= end:
        if staff.on_shift(moment):
            return moment
        moment += step
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
    ok = value >= target if higher_is_better else value <= target
    return "pass" if ok else "miss"


def spread(counts: Mapping[str, int], people: Sequence[str]) -> dict[str, Any]:
    """Return max/min/stdev of orders per person, people with none counting as zero."""
    values = [counts.get(p, 0) for p in people]
    if not values:
        return {"people": 0, "max": None, "min": None, "stdev": None}
    return {"people": len(values), "max": max(values), "min": min(values),
            "stdev": _round(statistics.pstdev(values)), "idle": sum(v == 0 for v in values)}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _minutes(rng: random.Random, spec: tuple[float, float, float]) -> timedelta:
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
    started = time.perf_counter()
    model.fit([text for text, _ in training], [label for _, label in training])
    train_seconds = time.perf_counter() - started

    def urgency_of(category: str) -> str:
        return catalogue.category(category).urgency

    pool: dict[str, list[Labelled]] = {}
    for text, label in load_examples(HELDOUT):
        if not label.startswith(REPORT_PREFIX):
            continue
        routed, ranking, urgency, reason = category_view(
            model.labels, model.scores(text).tolist(), text, config=config,
            default_urgency=urgency_of)
        if not catalogue.has_category(routed):
            routed = "other"  # as triage does
        truth = label.removeprefix(REPORT_PREFIX)
        pool.setdefault(truth, []).append(Labelled(text, truth, routed, ranking, urgency, reason))
    samples = [s for group in pool.values() for s in group]
    if not samples:
        raise BenchError(f"{HELDOUT}: no report_* sentences to simulate orders with")
    same_lead = sum(catalogue.category(s.routed).lead == catalogue.category(s.category).lead
                    for s in samples)
    return pool, {
        "training_examples": len(training),
        "train_seconds": _round(train_seconds),
        "heldout_report_sentences": len(samples),
        "category_accuracy": _round(sum(s.routed == s.category for s in samples) / len(samples)),
        "lead_department_accuracy": _round(same_lead / len(samples)),
    }


# ---------------------------------------------------------------- one simulated month


@dataclass
class RunCounters:
    returns: int = 0
    arbitrations: int = 0
    stranded: int = 0  # returned with nowhere left to go (awaiting an agent)
    side_overtaken: int = 0  # assist/verify orders the ticket's resolution overtook
    learn_refreshes: int = 0
    learned_rules: int = 0
    unstaffed: int = 0  # nobody in the department is ever on shift


@dataclass
class MonthRun:
    """Drive one month of orders through the real services, event by event, in sim time."""

    app: Any
    orders: Sequence[SimOrder]
    learning: bool
    days: int
    counters: RunCounters = field(default_factory=RunCounters)
    clock: datetime = SIM_START
    _queue: list[tuple[datetime, int, str, tuple[Any, ...]]] = field(default_factory=list)
    _seq: int = 0
    _learned: Any = None
    _rngs: dict[int, random.Random] = field(default_factory=dict)
    _ticket_order: dict[int, SimOrder] = field(default_factory=dict)
    _arbitration_orders: set[int] = field(default_factory=set)

    def _push(self, at: datetime, kind: str, *payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def _rng(self, order: SimOrder) -> random.Random:
        return self._rngs.setdefault(order.index, random.Random(order.rng_seed))

    def run(self) -> None:
        """Play every event in time order until nothing is left to do."""
        if self.learning:
            for day in range(self.days + 1):
                self._push((SIM_START + timedelta(days=day)).astimezone(UTC), "learn")
        for order in self.orders:
            self._push(order.created_at, "create", order)
        handlers: dict[str, Callable[..., None]] = {
            "learn": self._learn, "create": self._create, "lead": self._lead,
            "progress": self._progress, "resolve": self._resolve, "side": self._side,
            "side_done": self._side_done,
        }
        while self._queue:
            at, _, kind, payload = heapq.heappop(self._queue)
            self.clock = at
            handlers[kind](at, *payload)

    def ticket_orders(self) -> Mapping[int, SimOrder]:
        """Return the simulated order behind each ticket id."""
        return self._ticket_order

    # -- who acts when

    def _candidates(self, department: str, building: str) -> list[Any]:
        roster = self.app.roster
        if department == "grid":
            return list(roster.grid_workers(roster.grid_for_building(building).id))
        return [p for p in roster.members(department) if p.role != "director"]

    def _actor(self, department: str, assignee: str | None, order: SimOrder,
               at: datetime) -> tuple[datetime, str] | None:
        people = ([self.app.roster.member(assignee)] if assignee
                  else self._candidates(department, order.building))
        best: tuple[datetime, str] | None = None
        for person in people:
            when = next_on_shift(person, at)
            if when is not None and (best is None or when < best[0]):
                best = (when, person.id)
        if best is not None and best[0] > at:
            best = (best[0] + _minutes(self._rng(order), SHIFT_START_SLACK), best[1])
        return best

    def _when(self, staff_id: str, at: datetime, order: SimOrder) -> datetime:
        found = self._actor("", staff_id, order, at)
        return at if found is None else found[0]

    def _schedule(self, kind: str, order_id: int, department: str, assignee: str | None,
                  order: SimOrder, at: datetime) -> None:
        delay = _minutes(self._rng(order), ACCEPT_MINUTES[order.sample.urgency])
        found = self._actor(department, assignee, order, at + delay)
        if found is None:
            self.counters.unstaffed += 1
            return
        self._push(found[0], kind, order_id, found[1], order)

    # -- the events

    def _learn(self, at: datetime) -> None:
        from bot.db import session_scope
        from bot.dispatch import load_learned_routes

        with session_scope(self.app.sessions) as session:
            self._learned = load_learned_routes(session, roster=self.app.roster)
        self.counters.learn_refreshes += 1
        self.counters.learned_rules = len(self._learned.rules)

    def _create(self, at: datetime, order: SimOrder) -> None:
        from bot.db import session_scope
        from bot.dispatch import dispatch_ticket
        from bot.tickets import create_ticket

        sample = order.sample
        with session_scope(self.app.sessions) as session:
            ticket = create_ticket(
                session, now=at, category=sample.routed, description=sample.text,
                channel=order.channel, building=order.building, urgency=sample.urgency,
                urgency_reason=sample.urgency_reason, catalogue=self.app.catalogue)
            dispatch_ticket(session, ticket=ticket, catalogue=self.app.catalogue,
                            roster=self.app.roster, now=at, ranking=sample.ranking,
                            learned=self._learned)
            created = [(o.id, o.role, o.department, o.assignee) for o in ticket.work_orders]
            self._ticket_order[ticket.id] = order
        for order_id, role, department, assignee in created:
            kind = "lead" if role == "lead" else "side"
            self._schedule(kind, order_id, department, assignee, order, at)

    def _lead(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.db import session_scope
        from bot.models import WorkOrder
        from bot.staff import accept_order, return_order

        true_lead = self.app.catalogue.category(order.sample.category).lead
        with session_scope(self.app.sessions) as session:
            row = session.get(WorkOrder, order_id)
            if row is None or row.status != "open":
                return
            accepted = row.department == true_lead or order_id in self._arbitration_orders
            moved = None
            if accepted:
                accept_order(session, order_id=order_id, staff_id=staff_id,
                             roster=self.app.roster, now=at)
            else:
                outcome = return_order(
                    session, order_id=order_id, staff_id=staff_id, reason="not_our_function",
                    note="非本部门职能", roster=self.app.roster, catalogue=self.app.catalogue,
                    now=at, learned=self._learned)
                new = outcome.new_order
                moved = (None if new is None
                         else (new.id, new.department, new.assignee, outcome.arbitration))
        if accepted:
            on_site = at + _minutes(self._rng(order), ON_SITE_MINUTES[order.sample.urgency])
            self._push(self._when(staff_id, on_site, order), "progress", order_id, staff_id,
                       order)
            return
        self.counters.returns += 1
        if moved is None:
            self.counters.stranded += 1
            return
        new_id, department, assignee, arbitration = moved
        if arbitration:
            self.counters.arbitrations += 1
            self._arbitration_orders.add(new_id)
        self._schedule("lead", new_id, department, assignee, order, at)

    def _progress(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.db import session_scope
        from bot.staff import add_progress

        with session_scope(self.app.sessions) as session:
            add_progress(session, order_id=order_id, staff_id=staff_id, text="已到现场查看",
                         roster=self.app.roster, now=at)
        rng = self._rng(order)
        work = _minutes(rng, WORK_MINUTES[order.sample.urgency])
        if order_id in self._arbitration_orders:
            work += _minutes(rng, COORDINATION_MINUTES)  # the committee gets the doers in
        self._push(self._when(staff_id, at + work, order), "resolve", order_id, staff_id, order)

    def _resolve(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.db import session_scope
        from bot.staff import resolve_order

        with session_scope(self.app.sessions) as session:
            resolve_order(session, order_id=order_id, staff_id=staff_id, note="已处理完毕",
                          roster=self.app.roster, now=at)

    def _side(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.db import session_scope
        from bot.staff import StaffActionError, accept_order

        try:
            with session_scope(self.app.sessions) as session:
                accept_order(session, order_id=order_id, staff_id=staff_id,
                             roster=self.app.roster, now=at)
        except StaffActionError:
            self.counters.side_overtaken += 1
            return
        done = self._when(staff_id, at + _minutes(self._rng(order), SIDE_WORK_MINUTES), order)
        self._push(done, "side_done", order_id, staff_id, order)

    def _side_done(self, at: datetime, order_id: int, staff_id: str, order: SimOrder) -> None:
        from bot.db import session_scope
        from bot.staff import StaffActionError, resolve_order

        try:
            with session_scope(self.app.sessions) as session:
                resolve_order(session, order_id=order_id, staff_id=staff_id, note="协办完成",
                              roster=self.app.roster, now=at)
        except StaffActionError:
            self.counters.side_overtaken += 1


# ---------------------------------------------------------------- measuring a run


def _front_line(roster: Any) -> list[str]:
    return [p.id for p in roster.staff if p.role in ("worker", "grid_worker")]


def collect_run(run: MonthRun) -> dict[str, Any]:
    """Read every ticket back from the store and measure the month."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from bot.db import session_scope
    from bot.dispatch import hop_count
    from bot.models import Ticket
    from bot.ticket_view import ticket_timeline
    from routing.metrics import OrderRecord, summarize
    from routing.sla import deadlines, met_on_time

    app, end = run.app, run.clock
    catalogue, roster = app.catalogue, app.roster
    behind = run.ticket_orders()
    records: list[OrderRecord] = []
    to_owner: list[float] = []
    misfiled = learned_leads = learned_right = unresolved = 0
    per_person: Counter[str] = Counter()
    with session_scope(app.sessions) as session:
        tickets = session.execute(
            select(Ticket).options(selectinload(Ticket.events), selectinload(Ticket.work_orders))
            .order_by(Ticket.id)).scalars().all()
        for ticket in tickets:
            order = behind[ticket.id]
            true_lead = catalogue.category(order.sample.category).lead
            timeline = ticket_timeline(ticket)
            leads = sorted((o for o in ticket.work_orders if o.role == "lead"),
                           key=lambda o: (o.attempt, o.id))
            owner = next((o for o in reversed(leads) if o.status == "resolved"), None)
            if owner is not None:
                to_owner.append((owner.created_at - ticket.created_at).total_seconds() / 60)
            else:
                unresolved += 1
            misfiled += catalogue.category(ticket.category).lead != true_lead
            dispatched = next(e for e in ticket.events if e.kind == "dispatched")
            if "lead_department" in dispatched.data:
                learned_leads += 1
                learned_right += leads[0].department == true_lead
            sla_met = {}
            for deadline in deadlines(urgency=ticket.urgency, created_at=ticket.created_at,
                                      catalogue=catalogue):
                met = met_on_time(deadline=deadline, timeline=timeline, now=end)
                if met is not None:
                    sla_met[deadline.stage] = met
            assignees = tuple(dict.fromkeys(o.assignee for o in ticket.work_orders
                                            if o.assignee))
            per_person.update(assignees)
            records.append(OrderRecord(
                number=ticket.number, category=ticket.category, channel=ticket.channel,
                grid=roster.grid_for_building(ticket.building).id, created_at=ticket.created_at,
                urgency=ticket.urgency, hops=hop_count(ticket), first_lead=leads[0].department,
                final_owner=owner.department if owner is not None else None,
                dispatched_at=timeline.dispatched_at,
                first_response_at=timeline.first_response_at, resolved_at=timeline.resolved_at,
                assignees=assignees, sla_met=sla_met))
    summary = summarize(records)
    by_department: dict[str, Any] = {}
    for department in sorted({p.department for p in roster.staff}):
        people = [p for p in _front_line(roster) if roster.member(p).department == department]
        if people:
            by_department[department] = spread(per_person, people)
    return {
        "summary": summary,
        "by_urgency": {u: _brief(summarize([r for r in records if r.urgency == u]))
                       for u in sorted({r.urgency for r in records})},
        "minutes_to_right_owner": stats(to_owner),
        "unresolved_at_end": unresolved,
        "filed_under_wrong_lead": misfiled,
        "led_by_learned_rule": {"orders": learned_leads, "right_department": learned_right},
        "counters": vars(run.counters).copy(),
        "load_front_line": spread(per_person, _front_line(roster)),
        "load_front_line_by_department": by_department,
        "simulated_until": end.astimezone(LOCAL).isoformat(),
    }


def _brief(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("count", "hops", "first_time_right", "sla")
    return {k: summary[k] for k in keys}


def simulate(orders: Sequence[SimOrder], *, days: int, learning: bool, path: Path
             ) -> dict[str, Any]:
    """Run the month on a fresh migrated SQLite file and return its measures."""
    app = fresh_app(path)
    # An idle connection held open keeps SQLite from checkpointing the WAL each time the
    # engine's NullPool closes the last one; it speeds the run up and changes no result.
    keeper = app.engine.connect()
    started = time.perf_counter()
    try:
        run = MonthRun(app=app, orders=orders, learning=learning, days=days)
        run.run()
        measured = collect_run(run)
    finally:
        keeper.close()
        app.engine.dispose()
    measured["wall_seconds"] = _round(time.perf_counter() - started)
    return measured


def fresh_app(path: Path) -> Any:
    """Migrate a new SQLite file and build the App on it."""
    from bot.app import build_app
    from bot.migrate import upgrade
    from bot.settings import Secret, Settings

    url = f"sqlite:///{path}"
    upgrade(url)
    return build_app(Settings(database_url=Secret(url)))


# ---------------------------------------------------------------- baseline and speed


def relay_baseline(orders: Sequence[SimOrder], *, catalogue: Any, seed: int) -> dict[str, Any]:
    """Run the same orders through today's hand-by-hand relay."""
    hops: list[float] = []
    minutes: list[float] = []
    detoured = 0
    for order in orders:
        truth = catalogue.category(order.sample.category)
        # People read the words: the true category's urgency, or P1 when life is at risk.
        urgency = "P1" if order.sample.urgency == "P1" else truth.urgency
        rng = random.Random(f"relay:{seed}:{order.index}")
        count, waited = relay_order(department=truth.lead, urgency=urgency,
                                    created_at=order.created_at, rng=rng)
        detoured += count > len(relay_path(truth.lead, urgency)) - 1
        hops.append(float(count))
        minutes.append(waited)
    return {
        "orders": len(orders),
        "hops": stats(hops),
        "share_with_a_wrong_office": _round(detoured / len(orders)) if orders else None,
        "minutes_to_dispatch": stats(minutes),
    }


def decision_latency(app: Any, orders: Sequence[SimOrder], learned: Any,
                     rounds: int = 3) -> dict[str, Any]:
    """Time routing.dispatch.plan_dispatch alone on every simulated order, in process."""
    from bot.db import session_scope
    from bot.dispatch import order_load
    from routing.dispatch import TicketFacts, plan_dispatch

    with session_scope(app.sessions) as session:
        open_load, assigned_total = order_load(session)
    facts = [(TicketFacts(number=f"SIM-{o.index}", category=o.sample.routed,
                          urgency=o.sample.urgency, building=o.building,
                          ranking=o.sample.ranking), o.created_at) for o in orders]

    def plan(item: tuple[Any, datetime]) -> None:
        plan_dispatch(ticket=item[0], catalogue=app.catalogue, roster=app.roster,
                      open_load=open_load, assigned_total=assigned_total, learned=learned,
                      now=item[1])

    for item in facts[:50]:
        plan(item)  # warm-up: first calls pay for imports and caches
    samples: list[float] = []
    for _ in range(rounds):
        for item in facts:
            started = time.perf_counter_ns()
            plan(item)
            samples.append((time.perf_counter_ns() - started) / 1e6)
    return {"calls": len(samples), "with_learned_rules": learned is not None,
            "open_orders_in_load": sum(open_load.values()), "ms": stats(samples)}


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
        now = start + timedelta(seconds=20 * i)  # 3,000 orders stay within one ticket day
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
            session.close()  # NullPool: this closes the SQLite connection too
            session = None
        phases["create"] += t1 - t0
        phases["dispatch"] += t2 - t1
        phases["commit"] += time.perf_counter() - t2
    seconds = time.perf_counter() - started
    with app.sessions() as check:
        stored = check.execute(select(func.count()).select_from(Ticket)).scalar_one()
    app.engine.dispose()
    if stored != count:
        raise BenchError(f"throughput run stored {stored} tickets, expected {count}")
    return {"orders": count, "commit_every": batch, "seconds": _round(seconds),
            "orders_per_second": _round(count / seconds, 1),
            "ms_per_order": {k: _round(v * 1000 / count) for k, v in phases.items()},
            "pool": type(app.engine.pool).__name__}


# ---------------------------------------------------------------- report


def _get(data: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if data is None:
            return None
        data = data.get(key)
    return data


def _ratio(engine: float | None, relay: float | None) -> float | None:
    if engine is None or not relay:
        return None
    return _round(engine / relay)


def target_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return one row per figure: target, both engine runs with pass/miss, relay and ratio."""
    runs = report["runs"]
    relay = report["relay"]
    rows: list[dict[str, Any]] = []

    def row(metric: str, target: str, pick: Callable[[Mapping[str, Any]], Any],
            check: Callable[[Any], str] | None = None, relay_value: Any = None,
            ratio: bool = False) -> None:
        values = {name: pick(run) for name, run in runs.items()}
        rows.append({
            "metric": metric, "target": target, "values": values,
            "verdicts": {name: check(v) if check else "—" for name, v in values.items()},
            "relay": relay_value,
            "engine_over_relay": _ratio(values.get("learning"), relay_value) if ratio else None,
        })

    def under(limit: float) -> Callable[[Any], str]:
        return lambda v: verdict(v, limit, higher_is_better=False)

    def over(limit: float) -> Callable[[Any], str]:
        return lambda v: verdict(v, limit, higher_is_better=True)

    row("orders", "—", lambda r: r["summary"]["count"], relay_value=relay["orders"])
    row("hops mean", f"≤ {TARGET_HOPS_MEAN}", lambda r: _round(r["summary"]["hops"]["mean"]),
        under(TARGET_HOPS_MEAN), relay["hops"]["mean"], ratio=True)
    row("hops p95", f"≤ {TARGET_HOPS_P95:g}", lambda r: _round(r["summary"]["hops"]["p95"]),
        under(TARGET_HOPS_P95), relay["hops"]["p95"], ratio=True)
    row("first-time-right (relay: no wrong office)", "no target",
        lambda r: _round(r["summary"]["first_time_right"]),
        relay_value=_round(1 - relay["share_with_a_wrong_office"]))
    for label, key, relay_key in (
            ("dispatch", "minutes_to_dispatch", "minutes_to_dispatch"),
            ("right owner has it", None, "minutes_to_dispatch"),
            ("first response", "minutes_to_first_response", None),
            ("resolution", "minutes_to_resolution", None)):
        for q in ("p50", "p95"):
            def pick(r: Mapping[str, Any], key: str | None = key, q: str = q) -> Any:
                source = r["summary"][key] if key else r["minutes_to_right_owner"]
                return _round(source[q], 1)
            row(f"minutes to {label} {q}", "per-urgency SLA" if key and "first" in key
                or key and "resol" in key else "no target", pick,
                relay_value=_round(relay[relay_key][q], 1) if relay_key else None,
                ratio=relay_key is not None)
    for stage in ("dispatch", "first_response", "on_site", "resolve"):
        row(f"SLA {stage} met", f"≥ {TARGET_SLA_RATE:.0%} (assumed)",
            lambda r, s=stage: _round(_get(r, "summary", "sla", s, "rate")),
            over(TARGET_SLA_RATE))
    for scope, key in (("front-line workers", "load_front_line"),):
        for stat in ("max", "min", "stdev"):
            row(f"orders per {scope} {stat}", "no target", lambda r, k=key, s=stat: r[k][s])
    for stat in ("max", "min", "stdev"):
        row(f"orders per staff with any order {stat}", "no target",
            lambda r, s=stat: r["summary"]["load"][s])
    latency = report["decision_latency"]["ms"]
    rows.append({"metric": "plan_dispatch ms p50 / p95", "target": f"p95 ≤ {TARGET_DECISION_P95_MS:g}",
                 "values": {"learning": f"{latency['p50']} / {latency['p95']}"},
                 "verdicts": {"learning": verdict(latency["p95"], TARGET_DECISION_P95_MS,
                                                  higher_is_better=False)},
                 "relay": None, "engine_over_relay": None})
    for item in report.get("throughput", []):
        rows.append({"metric": f"orders/s created+dispatched+committed, commit every "
                               f"{item['commit_every']}",
                     "target": f"≥ {TARGET_THROUGHPUT_PER_S:g}",
                     "values": {"learning": item["orders_per_second"]},
                     "verdicts": {"learning": verdict(item["orders_per_second"],
                                                      TARGET_THROUGHPUT_PER_S,
                                                      higher_is_better=True)},
                     "relay": None, "engine_over_relay": None})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_markdown(report: Mapping[str, Any]) -> str:
    """Return the report as a Markdown table with a few lines of context."""
    config = report["config"]
    lines = [
        f"## Routing bench — {config['orders']} orders over {config['days']} simulated days "
        f"(seed {config['seed']})",
        "",
        "| figure | target | with learning | | without learning | | relay | engine ÷ relay |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["targets"]:
        values, verdicts = r["values"], r["verdicts"]
        lines.append(
            f"| {r['metric']} | {r['target']} | {_cell(values.get('learning'))} | "
            f"{verdicts.get('learning', '')} | {_cell(values.get('no_learning'))} | "
            f"{verdicts.get('no_learning', '') if 'no_learning' in values else ''} | "
            f"{_cell(r['relay'])} | {_cell(r['engine_over_relay'])} |")
    classifier = report["classifier"]
    effect = report["learning_effect"]
    lines += [
        "",
        f"Classifier (held-out report sentences): category accuracy "
        f"{classifier['category_accuracy']}, right lead department "
        f"{classifier['lead_department_accuracy']} of {classifier['heldout_report_sentences']}.",
        f"Learning effect (with − without): hops mean {_cell(effect['hops_mean_delta'])}, "
        f"first-time-right {_cell(effect['first_time_right_delta'])}, returns "
        f"{effect['returns']['learning']} vs {effect['returns']['no_learning']}, "
        f"orders led by a learned rule {effect['led_by_learned_rule']}.",
    ]
    for name, run in report["runs"].items():
        c = run["counters"]
        lines.append(
            f"{name}: {c['returns']} returns, {c['arbitrations']} arbitrations, "
            f"{c['stranded']} stranded, {run['unresolved_at_end']} unresolved at end, "
            f"{c['side_overtaken']} assist/verify orders overtaken, "
            f"{run['wall_seconds']} s wall.")
    return "\n".join(lines)


# ---------------------------------------------------------------- entry point


def run_bench(args: argparse.Namespace, note: Callable[[str], None]) -> dict[str, Any]:
    """Run every part of the benchmark and return the report."""
    from routing.catalogue import load_catalogue

    catalogue = load_catalogue()
    note("training the request classifier and labelling the held-out sentences")
    pool, classifier = labelled_pool(catalogue)
    from bot.community import load_community

    community = load_community()
    buildings = [b.number for b in community.buildings]
    lifts = [b.number for b in community.buildings if b.floors > 6]
    orders = plan_orders(days=args.days, per_day=args.orders_per_day, seed=args.seed,
                         pool=pool, lift_buildings=lifts, buildings=buildings)
    if not orders:
        raise BenchError("no orders drawn; raise --orders-per-day or --days")
    report: dict[str, Any] = {
        "config": {"days": args.days, "orders_per_day": args.orders_per_day, "seed": args.seed,
                   "orders": len(orders), "start": SIM_START.isoformat(),
                   "category_mix": dict(CATEGORY_MIX), "relay_wrong_share": RELAY_WRONG_SHARE,
                   "accept_minutes": ACCEPT_MINUTES, "on_site_minutes": ON_SITE_MINUTES,
                   "work_minutes": WORK_MINUTES},
        "classifier": classifier,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as folder:
        workdir = Path(folder)
        note("simulating the month with and without learned routes (two processes)")
        paths = {"learning": workdir / "learning.db", "no_learning": workdir / "no_learning.db"}
        # The runs are independent: one process each halves the wall time.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool_:
            jobs = {name: pool_.submit(simulate, orders, days=args.days,
                                       learning=name == "learning", path=path)
                    for name, path in paths.items()}
            report["runs"] = {name: job.result() for name, job in jobs.items()}
        note("timing plan_dispatch")
        app = fresh_app(paths["learning"])
        try:
            from bot.db import session_scope
            from bot.dispatch import load_learned_routes

            with session_scope(app.sessions) as session:
                learned = load_learned_routes(session, roster=app.roster)
            report["decision_latency"] = decision_latency(app, orders, learned)
        finally:
            app.engine.dispose()
        report["throughput"] = []
        if args.throughput_orders:
            for batch in (1, THROUGHPUT_BATCH):
                note(f"throughput: {args.throughput_orders} orders, commit every {batch}")
                report["throughput"].append(throughput(
                    orders, count=args.throughput_orders, batch=batch,
                    path=workdir / f"throughput-{batch}.db"))
    report["relay"] = relay_baseline(orders, catalogue=catalogue, seed=args.seed)
    with_, without = report["runs"]["learning"], report["runs"]["no_learning"]
    report["learning_effect"] = {
        "hops_mean_delta": _delta(_get(with_, "summary", "hops", "mean"),
                                  _get(without, "summary", "hops", "mean")),
        "first_time_right_delta": _delta(_get(with_, "summary", "first_time_right"),
                                         _get(without, "summary", "first_time_right")),
        "returns": {"learning": with_["counters"]["returns"],
                    "no_learning": without["counters"]["returns"]},
        "led_by_learned_rule": with_["led_by_learned_rule"],
        "rules_at_end": with_["counters"]["learned_rules"],
    }
    report["targets"] = target_rows(report)
    return report


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else _round(a - b, 4)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value
    return parse


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (skip) or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bot bench-routing",
        description="Simulate a month of the demo community's orders through the real "
        "routing engine and store, compare with the hand-by-hand relay, and report.")
    parser.add_argument("--days", type=_positive(int), default=30)
    parser.add_argument("--orders-per-day", type=_positive(float), default=40.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("var/bench/routing.json"),
                        help="JSON report path (relative to the current directory)")
    parser.add_argument("--throughput-orders", type=_not_negative, default=3000,
                        help="orders for the SQLite throughput runs; 0 skips them")
    return parser


def main(argv: list[str]) -> int:
    """Run the routing benchmark; write the JSON report, print the Markdown table."""
    args = build_parser().parse_args(argv)

    def note(message: str) -> None:
        print(f"bench-routing: {message}", file=sys.stderr, flush=True)

    import jieba

    jieba.setLogLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        report = run_bench(args, note)
    except BenchError as exc:
        note(str(exc))
        return 2
    report["wall_seconds"] = _round(time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str),
                        encoding="utf-8")
    print(render_markdown(report))
    print(f"\nfull report: {args.out} ({report['wall_seconds']} s)")
    return 0
