"""Per-channel gates: order, duplicates and gaps, without sockets or a database."""

from __future__ import annotations

import json
import time

import gevent
import gevent.event
import pytest

from app.hub import Hub
from app.messages import StoredEvent, StoredMessage, message_data


class FakeConnection:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.received: list[int] = []
        self.frames: list[bytes] = []

    def room_message(self, message: StoredMessage) -> None:
        self.received.append(message.id)

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)


def settle(hub: Hub) -> None:
    """Wait until no gap fill is scheduled or running (they run in their own greenlets)."""
    with gevent.Timeout(2):
        while any(gate.filling for gate in hub.gates.values()):
            gevent.sleep(0.001)  # let the fill's greenlet run


def room_message(id: int, seq: int, room: str = "r") -> StoredMessage:
    return StoredMessage(id=id, seq=seq, data=message_data(id, 1, "u", "c", "t", room=room))


def fetch_stored(stored: list[StoredMessage], after_id, from_seq, up_to_seq, limit) -> list[StoredMessage]:
    """What store.channel_after answers, from messages of one channel in id order."""
    if after_id is None:
        after_id = max((m.id for m in stored if m.seq < from_seq), default=0)
    return [m for m in stored if m.id > after_id and (up_to_seq is None or m.seq <= up_to_seq)][:limit]


def make_hub(
    stored: list[StoredMessage] | None = None, bus_handled_until=lambda: None
) -> tuple[Hub, FakeConnection, list]:
    calls = []

    def fetch(channel, after_id, from_seq, up_to_seq, limit):
        calls.append((channel, after_id, up_to_seq))
        return fetch_stored(stored or [], after_id, from_seq, up_to_seq, limit)

    hub = Hub(fetch, gap_wait_seconds=0.01, bus_handled_until=bus_handled_until)
    conn = FakeConnection(5)
    hub.join_room(conn, "r", last_seq=10, last_id=100)
    return hub, conn, calls


def test_in_order_messages_are_released_once():
    hub, conn, _ = make_hub()
    for message in (room_message(101, 11), room_message(102, 12), room_message(102, 12), room_message(90, 9)):
        hub.deliver(message)
    assert conn.received == [101, 102]


def test_early_message_waits_for_the_one_before_it():
    hub, conn, calls = make_hub()
    hub.deliver(room_message(105, 12))
    assert conn.received == []
    hub.deliver(room_message(103, 11))
    assert conn.received == [103, 105]
    settle(hub)
    assert calls == []  # the gap closed by itself


def test_a_gap_that_stays_open_is_filled_from_the_database():
    lost = room_message(103, 11)
    hub, conn, calls = make_hub(stored=[lost])
    hub.deliver(room_message(105, 12))
    settle(hub)
    assert conn.received == [103, 105]
    assert calls == [(("r", "r"), 100, 11)]


class LaggingBus:
    """A bus whose listener is behind (a busy process) until `catch_up`."""

    def __init__(self) -> None:
        self.asked = 0
        self.behind = True

    def handled_until(self) -> float:
        self.asked += 1
        return 0.0 if self.behind else time.monotonic()

    def wait_until_asked(self, times: int) -> None:
        with gevent.Timeout(2):
            while self.asked < times:
                gevent.sleep(0.001)


def test_a_gap_is_not_fetched_while_the_bus_is_behind():
    bus = LaggingBus()
    hub, conn, calls = make_hub(stored=[room_message(103, 11)], bus_handled_until=bus.handled_until)
    hub.deliver(room_message(105, 12))
    bus.wait_until_asked(3)  # three gap waits, and the fill has not fetched
    assert calls == [] and conn.received == []
    hub.deliver(room_message(103, 11))  # the payload the listener had not handled yet
    bus.behind = False
    settle(hub)
    assert conn.received == [103, 105]
    assert calls == []


def test_a_gap_is_fetched_once_the_bus_has_caught_up_without_it():
    bus = LaggingBus()
    hub, conn, calls = make_hub(stored=[room_message(103, 11)], bus_handled_until=bus.handled_until)
    hub.deliver(room_message(105, 12))
    bus.wait_until_asked(2)
    assert calls == []
    bus.behind = False  # caught up, and seq 11 was not there: pub/sub lost it
    settle(hub)
    assert conn.received == [103, 105]
    assert calls == [(("r", "r"), 100, 11)]


def test_a_fill_waiting_for_the_bus_ends_when_the_room_is_left():
    bus = LaggingBus()
    hub, conn, calls = make_hub(bus_handled_until=bus.handled_until)
    hub.deliver(room_message(105, 12))
    gate = hub.gates[("r", "r")]
    bus.wait_until_asked(1)
    hub.leave_room(conn, "r")
    with gevent.Timeout(2):
        while gate.filling:  # waiting on for a bus that stays behind, it would never end
            gevent.sleep(0.001)
    assert calls == []


def test_a_hole_left_by_a_lost_idempotency_race_is_skipped():
    hub, conn, _ = make_hub(stored=[])  # seq 11 was allocated but never stored
    hub.deliver(room_message(105, 12))
    settle(hub)
    assert conn.received == [105]


def test_check_heads_fetches_what_pubsub_lost_at_the_end_of_a_stream():
    hub, conn, _ = make_hub(stored=[room_message(101, 11), room_message(102, 12)])
    hub.check_heads({("r", "r"): 12}, at_once=False)
    settle(hub)
    assert conn.received == []  # may be in flight: wait for the next check
    hub.check_heads({("r", "r"): 12}, at_once=False)
    settle(hub)
    assert conn.received == [101, 102]


def test_check_heads_after_a_reconnect_fetches_at_once():
    hub, conn, _ = make_hub(stored=[room_message(101, 11)])
    hub.check_heads({("r", "r"): 11}, at_once=True)
    settle(hub)
    assert conn.received == [101]


def test_messages_of_rooms_without_members_here_are_ignored():
    hub, conn, _ = make_hub()
    hub.deliver(room_message(200, 1, room="elsewhere"))
    assert conn.received == [] and ("r", "elsewhere") not in hub.gates


def test_a_new_conversation_starts_at_seq_one():
    hub, _, _ = make_hub()
    alice = FakeConnection(1)
    hub.add_user_connection(alice, threads=[])
    dm = StoredMessage(id=300, seq=1, data=message_data(300, 2, "bob", "hi", "t", to_user=1))
    hub.deliver(dm)
    assert len(alice.frames) == 1 and b'"type":"dm"' in alice.frames[0]


def frame_types(conn: FakeConnection) -> list[str]:
    return [json.loads(frame[2 if frame[1] < 126 else 4 :])["type"] for frame in conn.frames]


@pytest.mark.parametrize("gap", [False, True], ids=["in order", "behind a gap"])
def test_a_dm_a_fill_reads_before_its_commit_delivers_it_reaches_its_sending_tab_once(gap):
    """The fill reads the committed row while the commit's own delivery (which knows the
    sending tab) has not run yet: the sending tab must get dm_sent only, never dm too."""
    pair = ("d", 1, 2)
    data = message_data(300, 1, "alice", "hi", "t", to_user=2)
    committed = [StoredMessage(id=300, seq=2 if gap else 1, data=data)]
    if gap:  # seq 1 was lost by the bus: the fill fetches it along
        committed.insert(0, StoredMessage(id=299, seq=1, data=message_data(299, 2, "bob", "yo", "t", to_user=1)))
    fetched = gevent.event.Event()

    def fetch(channel, after_id, from_seq, up_to_seq, limit):
        fetched.set()
        return committed

    hub = Hub(fetch, gap_wait_seconds=0.01)
    sending_tab, other_tab, bob = FakeConnection(1), FakeConnection(1), FakeConnection(2)
    for conn in (sending_tab, other_tab, bob):
        hub.add_user_connection(conn, threads=[(pair, 0)])
    hub.local_commits.begin([pair])  # the batch of the sending tab's DM is being committed
    hub.check_heads({pair: committed[-1].seq}, at_once=True)  # a head read just after the commit
    with gevent.Timeout(2):
        fetched.wait()
    gevent.sleep(0)  # the fill had its chance to release what it read
    ours = committed[-1]
    hub.deliver(StoredMessage(id=ours.id, seq=ours.seq, data=data, origin_connection=sending_tab))
    hub.local_commits.end([pair])  # the commit's delivery is done
    settle(hub)
    expected = ["dm"] if gap else []
    assert frame_types(sending_tab) == [*expected, "dm_sent"]
    assert frame_types(other_tab) == frame_types(bob) == [*expected, "dm"]


def test_a_fill_goes_on_without_a_commits_delivery_that_does_not_come():
    """A lane stuck on a lost connection must not hold the conversation for long: the
    sending tab then gets its DM as dm, and dm_sent once the delivery comes."""
    pair = ("d", 1, 2)
    data = message_data(300, 1, "alice", "hi", "t", to_user=2)
    hub = Hub(lambda *args: [StoredMessage(id=300, seq=1, data=data)], gap_wait_seconds=0.01)
    hub.local_commit_wait_seconds = 0.01
    sending_tab = FakeConnection(1)
    hub.add_user_connection(sending_tab, threads=[(pair, 0)])
    hub.local_commits.begin([pair])
    hub.check_heads({pair: 1}, at_once=True)
    settle(hub)
    assert frame_types(sending_tab) == ["dm"]
    hub.deliver(StoredMessage(id=300, seq=1, data=data, origin_connection=sending_tab))
    hub.local_commits.end([pair])
    assert frame_types(sending_tab) == ["dm", "dm_sent"]


def test_a_user_is_in_a_room_while_one_of_its_connections_is():
    hub = Hub(lambda *args: [], gap_wait_seconds=0.01)
    crowd = [FakeConnection(1000 + i) for i in range(50)]
    tab, other_tab, elsewhere = FakeConnection(7), FakeConnection(7), FakeConnection(7)
    for conn in [*crowd, tab, other_tab, elsewhere]:
        hub.add_user_connection(conn, threads=[])
    for conn in [*crowd, tab, other_tab]:
        hub.join_room(conn, "r", last_seq=0, last_id=0)
    hub.join_room(elsewhere, "s", last_seq=0, last_id=0)
    assert hub.user_in_room(7, "r")
    hub.leave_room(tab, "r")
    assert hub.user_in_room(7, "r")  # the other tab is still there
    hub.leave_room(other_tab, "r")
    assert not hub.user_in_room(7, "r")  # in another room only
    assert hub.user_in_room(7, "s") and not hub.user_in_room(7, "nowhere")
    assert hub.user_in_room(1000, "r") and not hub.user_in_room(8, "r")


def test_a_conversations_gate_lives_while_one_of_its_users_is_connected_here():
    hub = Hub(lambda *args: [], gap_wait_seconds=0.01)
    alice, bob, alice_again = FakeConnection(1), FakeConnection(2), FakeConnection(1)
    pair = ("d", 1, 2)
    hub.add_user_connection(alice, threads=[(pair, 3)])
    hub.add_user_connection(bob, threads=[(pair, 3)])
    hub.remove_user_connection(alice)
    assert pair in hub.gates  # bob is still here
    hub.add_user_connection(alice_again, threads=[(pair, 3)])
    hub.remove_user_connection(bob)
    assert pair in hub.gates  # alice is back
    hub.remove_user_connection(alice_again)
    assert pair not in hub.gates and hub.conversations_by_user == {}
    # A conversation started while connected, with someone never connected here:
    carol = FakeConnection(3)
    hub.add_user_connection(carol, threads=[])
    hub.deliver(StoredMessage(id=40, seq=1, data=message_data(40, 9, "dave", "hi", "t", to_user=3)))
    assert carol.frames and ("d", 3, 9) in hub.gates
    hub.remove_user_connection(carol)
    assert hub.gates == {} and hub.conversations_by_user == {}


def test_thousands_waiting_behind_a_gap_go_out_in_order_when_it_closes():
    hub, conn, _ = make_hub()
    hub.gap_wait_seconds = 60  # no fill: the missing one comes by the bus
    waiting = 10_000
    for seq in range(12, 12 + waiting):
        hub.deliver(room_message(seq + 90, seq))
    hub.deliver(room_message(101, 11))
    assert conn.received == list(range(101, 101 + waiting + 1))
    assert hub.gates[("r", "r")].pending == {}


def test_arrivals_a_fill_has_overtaken_are_dropped_not_released():
    # Seq 12 is a hole (a resend stored elsewhere); 13 and 14 are on their way.
    stored = [room_message(101, 11), room_message(103, 13)]
    hub, conn, _ = make_hub(stored)
    hub.deliver(room_message(103, 13))  # early: waits, and a fill is scheduled
    settle(hub)  # the fill fetched 11 and 13 and skipped the hole
    hub.deliver(room_message(103, 13))
    hub.deliver(room_message(104, 14))
    assert conn.received == [101, 103, 104]
    assert hub.gates[("r", "r")].pending == {}


def test_a_head_checked_while_a_fill_runs_is_reached_by_that_fill():
    """After a bus reconnect, a room already filling a gap before an early arrival must
    also fetch what came after it, not leave that to two more periodic checks."""
    stored = [room_message(101 + n, 11 + n) for n in range(4)]  # seq 11-14
    hub, conn, calls = make_hub(stored=stored)
    hub.deliver(room_message(103, 13))  # early: a fill for 11-12 is scheduled
    hub.check_heads({("r", "r"): 14}, at_once=True)  # the reconnect's catch-up, meanwhile
    settle(hub)
    assert conn.received == [101, 102, 103, 104]
    assert hub.gates[("r", "r")].fill_up_to is None


def dm(id: int, seq: int, sender: int, to: int) -> StoredMessage:
    return StoredMessage(id=id, seq=seq, data=message_data(id, sender, f"user{sender}", f"m{id}", "t", to_user=to))


def dm_ids(conn: FakeConnection) -> list[int]:
    """The ids of the DM frames sent (unmasked server frames: 2 header bytes, or 4 from
    126 bytes of payload)."""
    return [json.loads(frame[2 if frame[1] < 126 else 4 :])["data"]["id"] for frame in conn.frames]


def test_dms_committed_while_a_connection_is_registered_reach_it():
    """Alice's conversations are read, then her connection is listed: a DM committed in
    between reached this process before it could reach her, and must not be lost."""
    hub = Hub(lambda *args: [], gap_wait_seconds=0.01)
    carol = FakeConnection(3)  # here already, in a conversation with alice
    hub.add_user_connection(carol, threads=[(("d", 1, 3), 4)])
    alice = FakeConnection(1)
    hub.begin_registration(alice)
    hub.deliver(dm(50, 1, sender=2, to=1))  # bob starts a conversation: nobody here takes it
    hub.deliver(dm(41, 5, sender=3, to=1))  # carol writes: released to carol's tab only
    hub.deliver(dm(40, 4, sender=3, to=1))  # in alice's listing (a late copy)
    hub.deliver(dm(52, 2, sender=2, to=1))
    hub.add_user_connection(alice, threads=[(("d", 1, 3), 4)])  # read before 41 and 50
    assert sorted(dm_ids(alice)) == [41, 50, 52]
    assert dm_ids(alice).index(50) < dm_ids(alice).index(52)
    assert ("d", 1, 2) in hub.gates and hub.registering == {}
    hub.deliver(dm(53, 3, sender=2, to=1))  # and the conversation goes on live
    assert dm_ids(alice)[-1] == 53 and len(alice.frames) == 4


def test_a_gap_in_a_conversation_listed_at_connect_is_filled_from_its_last_released_message():
    """A connection lists its conversations' last seq, not their last message id: the
    first fill of such a conversation finds that id itself, later ones know it."""
    pair = ("d", 1, 2)
    stored = [dm(10, 1, 1, 2), dm(25, 2, 2, 1), dm(30, 3, 1, 2), dm(44, 4, 2, 1), dm(60, 6, 1, 2)]
    calls = []

    def fetch(channel, after_id, from_seq, up_to_seq, limit):
        calls.append((after_id, from_seq))
        return fetch_stored(stored, after_id, from_seq, up_to_seq, limit)

    hub = Hub(fetch, gap_wait_seconds=0.01)
    alice = FakeConnection(1)
    hub.add_user_connection(alice, threads=[(pair, 3)])
    assert hub.gates[pair].last_id is None
    hub.deliver(dm(50, 5, 2, 1))  # 44 was lost
    settle(hub)
    hub.deliver(dm(70, 7, 2, 1))  # 60 was lost
    settle(hub)
    assert dm_ids(alice) == [44, 50, 60, 70]
    assert calls == [(None, 4), (50, 6)]


def test_a_connection_closed_while_registered_keeps_nothing():
    hub = Hub(lambda *args: [], gap_wait_seconds=0.01)
    alice = FakeConnection(1)
    hub.begin_registration(alice)
    hub.remove_user_connection(alice)
    hub.deliver(dm(50, 1, sender=2, to=1))
    assert hub.registering == {} and hub.gates == {}


def room_event(id: int, seq: int, kind: str = "reaction", room: str = "r") -> StoredEvent:
    """A §10 event of a room message (its data does not name the room: its channel does)."""
    data = {"id": 1, "emoji": "\U0001f44d", "userId": 2, "username": "v", "on": True}
    return StoredEvent(id=id, seq=seq, data=data, kind=kind, event_channel=("r", room))


def test_events_and_messages_share_one_order_whatever_path_brings_them():
    """Events go through the room's gate like messages: released in seq order, each once;
    one that comes early waits, and one lost is filled from the database with the rest."""
    lost = room_event(103, 13)
    hub, conn, calls = make_hub(stored=[lost])
    hub.deliver(room_event(102, 12))  # before the message it follows: waits
    hub.deliver(room_message(101, 11))
    hub.deliver(room_event(102, 12))  # the same event again (its own commit and the bus)
    hub.deliver(room_message(104, 14))  # behind the lost event: waits, then filled
    settle(hub)
    assert conn.received == [101, 102, 103, 104]
    assert calls == [(("r", "r"), 102, 13)]


def test_a_dm_event_reaches_both_parties_connections():
    hub, _, _ = make_hub()
    sender, recipient, other = FakeConnection(7), FakeConnection(8), FakeConnection(9)
    for conn in (sender, recipient, other):
        hub.add_user_connection(conn, [(("d", 7, 8), 3)])
    data = {"id": 30, "to": 8, "fromUser": 7}
    event = StoredEvent(id=31, seq=4, data=data, kind="message_deleted", event_channel=("d", 7, 8))
    hub.deliver(event)
    frames = [json.loads(conn.frames[0][2:]) for conn in (sender, recipient)]
    assert frames == [{"type": "message_deleted", "eventId": 31, "data": {"id": 30, "to": 8, "fromUser": 7}}] * 2
    assert other.frames == []
