"""The scheduler's policy, on a clock the test moves: urgency, one request per camera, a bound on every
wait, stickiness for backends that keep per-stream state, and parallel slots for engines."""

from __future__ import annotations

import pytest

from pipeline.scheduler import HOLD_DEFAULT, Scheduler, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def busy(scheduler: Scheduler) -> Ticket:
    """Take the only slot, so the requests after it queue."""
    ticket = scheduler.ask("busy", "active")
    assert ticket.granted is not None
    return ticket


def test_the_most_urgent_request_goes_first(clock: Clock) -> None:
    scheduler = Scheduler(clock=clock)
    running = busy(scheduler)
    heartbeat = scheduler.ask("a", "heartbeat")
    active = scheduler.ask("b", "active")
    cut = scheduler.ask("c", "scene_cut")
    order = []
    for _ in range(3):
        scheduler.finish(running)
        running = next(t for t in (heartbeat, active, cut) if t.granted is not None and not t.done)
        order.append(running.stream)
    assert order == ["c", "b", "a"]


def test_a_camera_has_one_pending_request_and_a_newer_reason_replaces_it(clock: Clock) -> None:
    scheduler = Scheduler(clock=clock)
    running = busy(scheduler)
    first = scheduler.ask("a", "heartbeat")
    clock.now += 1
    again = scheduler.ask("a", "scene_cut")
    assert again is first and first.trigger == "scene_cut" and scheduler.waiting == 1
    assert scheduler.ask("a", "heartbeat").trigger == "scene_cut"  # a less urgent reason does not lower it
    scheduler.finish(running)
    assert first.granted is not None and first.queue_wait == pytest.approx(1.0)


def test_no_request_waits_past_the_bound_whatever_arrives_after_it(clock: Clock) -> None:
    scheduler = Scheduler(max_wait=5.0, clock=clock)
    running = busy(scheduler)
    patient = scheduler.ask("a", "heartbeat")
    clock.now += 5.0
    urgent = scheduler.ask("b", "scene_cut")
    scheduler.finish(running)
    assert patient.granted is not None and urgent.granted is None


def test_a_warm_camera_keeps_the_model_for_a_few_turns_then_the_other_gets_it(clock: Clock) -> None:
    scheduler = Scheduler(keeps_stream_state=True, sticky_turns=3, clock=clock)
    runs = []
    other = None
    for _ in range(4):
        ticket = scheduler.ask("a", "active")
        if ticket.granted is None:
            break
        runs.append("a")
        if other is None:
            other = scheduler.ask("b", "active")  # b waits from the first turn on
        clock.now += 1.0
        scheduler.finish(ticket)
        assert other.granted is None or len(runs) == 3  # the slot is held for a, not handed to b
    assert runs == ["a", "a", "a"] and other is not None and other.granted is not None
    assert scheduler.switches == 1 and scheduler.turns == 4


def test_the_hold_lasts_no_longer_than_a_switch_costs(clock: Clock) -> None:
    scheduler = Scheduler(keeps_stream_state=True, clock=clock)
    assert scheduler.hold_seconds() == HOLD_DEFAULT  # nothing measured yet
    for stream, first_token in (("a", 0.2), ("a", 0.2), ("b", 0.9)):
        ticket = scheduler.ask(stream, "active")
        clock.now += scheduler.hold_seconds() + 0.01  # b's ask waits out a's hold
        assert ticket.wait(0.5)
        scheduler.finish(ticket, first_token)
    assert scheduler.cost.seconds == pytest.approx(0.7)
    assert scheduler.hold_seconds() == pytest.approx(0.7)
    running = scheduler.ask("c", "active")  # a switch from b: the slot is free at once after the hold
    clock.now += 0.71
    assert running.wait(0.5) and running.switched


def test_a_backend_without_stream_state_is_not_held(clock: Clock) -> None:
    scheduler = Scheduler(keeps_stream_state=False, clock=clock)
    first = scheduler.ask("a", "active")
    waiting = scheduler.ask("b", "active")
    scheduler.finish(first)
    assert waiting.granted is not None


def test_an_urgent_request_is_not_kept_waiting_for_a_warm_camera(clock: Clock) -> None:
    scheduler = Scheduler(keeps_stream_state=True, clock=clock)
    scheduler.finish(scheduler.ask("a", "active"))
    assert scheduler.ask("b", "heartbeat").granted is None  # held for a
    assert scheduler.ask("c", "scene_cut").granted is not None


def test_an_engine_runs_as_many_turns_at_once_as_it_has_slots(clock: Clock) -> None:
    scheduler = Scheduler(slots=2, clock=clock)
    tickets = [scheduler.ask(name, "active") for name in "abc"]
    assert [t.granted is not None for t in tickets] == [True, True, False]
    scheduler.finish(tickets[0])
    assert tickets[2].granted is not None


def test_a_withdrawn_request_frees_its_place(clock: Clock) -> None:
    scheduler = Scheduler(clock=clock)
    running = busy(scheduler)
    leaving = scheduler.ask("a", "scene_cut")
    staying = scheduler.ask("b", "heartbeat")
    scheduler.withdraw(leaving)
    scheduler.finish(running)
    assert leaving.granted is None and staying.granted is not None
    scheduler.withdraw(staying)  # a granted turn that is withdrawn is finished
    assert scheduler.ask("c", "heartbeat").granted is not None
