"""OSC feedback subscriptions: expiry, renewal, per-sender limits, no lock-out (a fake clock, no sleeping)."""

import pytest

from bridge.core.errors import ValidationError
from bridge.frontends.osc.subscriptions import SubscriptionPool, Subscriptions


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_a_subscription_expires_unless_renewed(clock):
    subs = Subscriptions(ttl_s=60, clock=clock)
    subs.subscribe(("127.0.0.1", 5000), 6000)
    subs.subscribe(("127.0.0.1", 5001), 6001)
    clock.now += 40
    subs.subscribe(("127.0.0.1", 5000), 6000)  # renewed: 60 s from now
    clock.now += 30
    assert subs.targets() == [("127.0.0.1", 6000)]  # 6001 was not renewed: 70 s old, gone
    clock.now += 30
    assert not subs and len(subs) == 0


def test_feedback_goes_to_the_senders_own_host_and_a_port_is_one_slot(clock):
    subs = Subscriptions(clock=clock)
    assert subs.subscribe(("10.0.0.7", 5000), 6000) == ("10.0.0.7", 6000)
    subs.subscribe(("10.0.0.7", 5000), 6000)
    subs.subscribe(("10.0.0.7", 5002), 6000)  # another sender of that host names the same port: still one slot
    subs.subscribe(("10.0.0.8", 5000), 6000)
    assert sorted(subs) == [("10.0.0.7", 6000), ("10.0.0.8", 6000)]
    assert subs.targets("10.0.0.8") == [("10.0.0.8", 6000)]
    subs.unsubscribe(("10.0.0.7", 5000), 6000)
    assert list(subs) == [("10.0.0.8", 6000)]


def test_one_sender_holds_at_most_four_ports(clock):
    subs = Subscriptions(per_sender=4, clock=clock)
    noisy = ("127.0.0.1", 40000)
    for port in range(6000, 6004):
        subs.subscribe(noisy, port)
    with pytest.raises(ValidationError, match="at most 4 OSC feedback ports per sender"):
        subs.subscribe(noisy, 6004)
    subs.subscribe(noisy, 6003)  # renewing one it holds is fine
    subs.subscribe(("127.0.0.1", 40001), 7000)  # another sender is not affected
    assert len(subs) == 5


def test_noisy_senders_cannot_lock_a_real_subscriber_out(clock):
    subs = Subscriptions(per_sender=4, capacity=64, per_host=64, clock=clock)  # the capacity's rule alone
    for sender_port in range(40000, 40016):  # 16 noisy senders x 4 ports: every slot taken
        for port in range(4):
            subs.subscribe(("127.0.0.1", sender_port), 10000 + (sender_port - 40000) * 4 + port)
            clock.now += 0.001
    assert len(subs) == 64
    real = ("127.0.0.1", 50000)
    subs.subscribe(real, 9001)  # takes the oldest slot of a sender holding several
    assert ("127.0.0.1", 9001) in subs and ("127.0.0.1", 10000) not in subs and len(subs) == 64
    clock.now += 30
    for sender_port in range(40000, 40016):  # the noisy senders renew, and take back what they lost
        for port in range(4):
            subs.subscribe(("127.0.0.1", sender_port), 10000 + (sender_port - 40000) * 4 + port)
    subs.subscribe(real, 9001)
    assert ("127.0.0.1", 9001) in subs and len(subs) == 64  # still there: they evict each other, not it


def test_when_every_sender_holds_one_slot_the_stalest_goes(clock):
    subs = Subscriptions(capacity=3, clock=clock)
    for sender_port in range(3):
        subs.subscribe(("127.0.0.1", 40000 + sender_port), 6000 + sender_port)
        clock.now += 10
    subs.subscribe(("127.0.0.1", 40000), 6000)  # renewed: now 40001's slot is the stalest
    subs.subscribe(("127.0.0.1", 50000), 9001)
    assert sorted(subs) == [("127.0.0.1", 6000), ("127.0.0.1", 6002), ("127.0.0.1", 9001)]
    clock.now += 61  # dead subscribers expire
    assert not subs


def test_one_host_holds_at_most_per_host_slots_over_every_channel_and_its_ports(clock):
    """Issue 24: 30 source ports of one host used to fill all 64 slots (4 each); 4 channels x 64 amplified."""
    pool = SubscriptionPool(per_host=16, capacity=64)
    channels = [Subscriptions(pool=pool, clock=clock) for _ in range(4)]
    for source in range(30):
        for subs in channels:
            for port in range(4):
                subs.subscribe(("127.0.0.1", 40000 + source), 10000 + source * 4 + port)
                clock.now += 0.001
    assert pool.held("127.0.0.1") == 16 and sum(len(s) for s in channels) == 16
    other = ("10.0.0.9", 5000)  # another host is not affected by 127.0.0.1's limit
    channels[0].subscribe(other, 5000)
    assert ("10.0.0.9", 5000) in channels[0] and pool.held() == 17
    real = ("127.0.0.1", 50000)  # a newcomer on the full host still gets in, at the noisiest sender's cost
    channels[1].subscribe(real, 9001)
    assert ("127.0.0.1", 9001) in channels[1] and pool.held("127.0.0.1") == 16
    channels[2].close()  # a deleted channel gives its slots back
    assert channels[2] not in pool.members and pool.held() == sum(len(s) for s in channels[:2] + channels[3:])


def test_the_pool_capacity_counts_every_channel(clock):
    pool = SubscriptionPool(per_host=4, capacity=6)
    a, b = Subscriptions(pool=pool, clock=clock), Subscriptions(pool=pool, clock=clock)
    for host in range(6):
        (a if host % 2 else b).subscribe((f"10.0.0.{host}", 7000), 7000)
        clock.now += 1
    a.subscribe(("10.0.0.99", 7000), 7000)  # the stalest slot of all goes (10.0.0.0's, in b)
    assert pool.held() == 6 and ("10.0.0.0", 7000) not in b and ("10.0.0.99", 7000) in a
