"""Reverb replay, split by job: `tables` (the tables and what every user
shares), `writer` (the actor side), `dataset` (the learner side).

Importing this package imports TensorFlow and Reverb (and hides GPUs from TF);
no other package of the project imports TensorFlow.
"""

from replay.tables import (
    TABLE,
    ReplayError,
    ReplayTimeoutError,
    address_of,
    make_tables,
    resolve_max_size,
    server_address,
    table_signature,
    table_size,
)
from replay.writer import (
    TrajectoryWriter,
    connect_writer,
    server_reachable,
    wait_until_taken,
    wait_while_full,
)
from replay.dataset import TrajectoryIterator, make_dataset

__all__ = [
    "TABLE",
    "ReplayError",
    "ReplayTimeoutError",
    "TrajectoryIterator",
    "TrajectoryWriter",
    "address_of",
    "connect_writer",
    "make_dataset",
    "make_tables",
    "resolve_max_size",
    "server_address",
    "server_reachable",
    "table_signature",
    "table_size",
    "wait_until_taken",
    "wait_while_full",
]
