"""One pubsub for the control plane: PostgreSQL LISTEN/NOTIFY, and an in-memory twin for SQLite and tests."""

from dockyard.events.bus import Bus, bus_of, make_pubsub
from dockyard.events.memory import MemoryPubsub
from dockyard.events.postgres import PostgresPubsub
from dockyard.events.pubsub import MAX_PAYLOAD, Pubsub, Subscription
from dockyard.events.waiters import Fanout, Waiter

__all__ = [
    "MAX_PAYLOAD",
    "Bus",
    "Fanout",
    "MemoryPubsub",
    "PostgresPubsub",
    "Pubsub",
    "Subscription",
    "Waiter",
    "bus_of",
    "make_pubsub",
]
