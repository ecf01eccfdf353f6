"""Reverb replay: tables, the actor-side trajectory writer, the learner dataset.

Importing this package imports TensorFlow and Reverb (and hides GPUs from TF);
no other package of the project imports TensorFlow.
"""
from replay.reverb_replay import (TABLE, ReplayError, ReplayTimeoutError, TrajectoryIterator,
                                  TrajectoryWriter, address_of, connect_writer, make_dataset,
                                  make_tables, resolve_max_size, server_address,
                                  server_reachable, table_signature, table_size,
                                  wait_until_taken)

__all__ = [
    "TABLE", "ReplayError", "ReplayTimeoutError", "TrajectoryIterator", "TrajectoryWriter",
    "address_of", "connect_writer", "make_dataset", "make_tables", "resolve_max_size",
    "server_address", "server_reachable", "table_signature", "table_size", "wait_until_taken",
]
