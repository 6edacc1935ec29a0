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
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
