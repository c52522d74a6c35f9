"""The fair queue alone: order, fairness between users, priorities, bounds. No I/O."""

from __future__ import annotations

import pytest

from gateway.routing.fair_queue import FairQueue, QueueFull, Waiter


def drain(queue: FairQueue, model: str = "m") -> list[str]:
    order = []
    while (waiter := queue.pop(model)) is not None:
        order.append(waiter.user)
    return order


def test_users_take_turns_so_a_burst_cannot_starve_others() -> None:
    queue = FairQueue(100, 100)
    for _ in range(5):
        queue.push(Waiter("m", "burst", 1, 0.0))
    queue.push(Waiter("m", "late", 1, 1.0))
    queue.push(Waiter("m", "later", 1, 2.0))
    assert drain(queue) == ["burst", "late", "later", "burst", "burst", "burst", "burst"]
    assert len(queue) == 0


def test_a_higher_priority_class_goes_first_and_models_wait_apart() -> None:
    queue = FairQueue(100, 100)
    queue.push(Waiter("m", "free", 1, 0.0))
    queue.push(Waiter("other", "free", 1, 0.0))
    queue.push(Waiter("m", "paid", 5, 1.0))
    assert drain(queue) == ["paid", "free"]
    assert drain(queue, "other") == ["free"]


def test_position_predicts_the_order_of_service() -> None:
    queue = FairQueue(100, 100)
    waiters = [Waiter("m", user, 1, float(i)) for i, user in enumerate("aaabbc")]
    waiters.append(Waiter("m", "vip", 2, 9.0))
    for waiter in waiters:
        queue.push(waiter)
    predicted = sorted(waiters, key=queue.position)
    served = []
    while (next_one := queue.pop("m")) is not None:
        served.append(next_one)
    assert served == predicted
    assert [w.user for w in served] == ["vip", "a", "b", "c", "a", "b", "a"]


def test_bounds_per_user_and_in_total_refuse_but_a_bounced_call_comes_back_first() -> None:
    queue = FairQueue(max_total=3, max_per_user=2)
    first = Waiter("m", "a", 1, 0.0)
    queue.push(first)
    queue.push(Waiter("m", "a", 1, 0.0))
    with pytest.raises(QueueFull, match="2 calls waiting"):
        queue.push(Waiter("m", "a", 1, 0.0))
    queue.push(Waiter("m", "b", 1, 0.0))
    with pytest.raises(QueueFull, match="queue is full"):
        queue.push(Waiter("m", "c", 1, 0.0))
    assert queue.pop("m") is first
    queue.push(first, front=True)  # sent, refused by a full node: back at the head
    assert queue.position(first) == 0
    assert queue.pop("m") is first


def test_a_call_that_gives_up_leaves_and_the_oldest_wait_is_known() -> None:
    queue = FairQueue(10, 10)
    gone, kept = Waiter("m", "a", 1, 1.0), Waiter("m", "b", 1, 2.0)
    queue.push(gone)
    queue.push(kept)
    assert queue.oldest("m") == 1.0
    assert queue.remove(gone) and not queue.remove(gone)
    assert queue.oldest("m") == 2.0 and queue.position(kept) == 0
    assert queue.waiting("m") == 1 and queue.models() == ["m"]
    queue.remove(kept)
    assert queue.models() == [] and queue.oldest("m") is None


def test_a_user_who_starts_waiting_goes_before_the_users_served_since_them() -> None:
    queue = FairQueue(100, 100)
    for _ in range(4):
        queue.push(Waiter("m", "burst", 1, 0.0))
    assert queue.pop("m").user == "burst"  # type: ignore[union-attr]
    # A newcomer is next, not after another of the burst's calls.
    single = Waiter("m", "single", 1, 1.0)
    queue.push(single)
    assert queue.position(single) == 0
    assert queue.pop("m").user == "single"  # type: ignore[union-attr]
    # Back soon with another call, it was served after the burst was: the burst goes first.
    queue.push(Waiter("m", "single", 1, 2.0))
    assert drain(queue) == ["burst", "single", "burst", "burst"]
