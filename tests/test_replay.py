"""Replay: real Reverb server on localhost, real trajectories with known values.

T = 3, two environments, 4x4x1 observations. Step t of env e carries
observation pixels = t, action = t, reward = t + 100 e, so every sampled
item tells which environment and which steps it holds.
"""

import subprocess
import sys
import threading
import time

import numpy as np
import portpicker
import pytest

from agents.types import Trajectory
from configs import ReplayConfig
from replay import (
    TABLE,
    ReplayError,
    ReplayTimeoutError,
    TrajectoryIterator,
    TrajectoryWriter,
    make_dataset,
    make_tables,
    server_address,
    table_size,
    wait_while_full,
)

import reverb  # after `replay`, which hides GPUs from TensorFlow first
import tensorflow as tf

T = 3
N_ENVS = 2
OBS = (4, 4, 1)
A = 3
BATCH = 2


def _bounded(fn, timeout_s):
    """Runs fn() in a thread; fails the test instead of hanging past timeout_s."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        pytest.fail(f"call did not return within {timeout_s} s (hang)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _step(t, num_envs=N_ENVS):
    e = np.arange(num_envs)
    return Trajectory(
        observation=np.full((num_envs,) + OBS, t, np.uint8),
        action=np.full(num_envs, t, np.int64),  # cast to int32 by the writer
        reward=(t + 100.0 * e).astype(np.float32),
        discount=np.ones(num_envs, np.float32),
        behaviour_logits=np.stack([np.array([t, e_, -1.0], np.float32) for e_ in e]),
        first=np.full(num_envs, float(t == 0), np.float32),
    )


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def _make(cfg, batch_size=BATCH):
        # Reverb's default checkpointer would leave a fresh /tmp/tmp* folder per server.
        path = str(tmp_path / f"ckpt{len(servers)}")
        checkpointer = reverb.checkpointers.DefaultCheckpointer(path)
        server = reverb.Server(
            make_tables(cfg, batch_size, OBS, A, T),
            port=portpicker.pick_unused_port(),
            checkpointer=checkpointer,
        )
        servers.append(server)
        return server_address(server)

    yield _make
    for server in servers:
        server.stop()


def _write(address, cfg, steps, num_envs=N_ENVS):
    with TrajectoryWriter(address, num_envs, T, timeout_ms=cfg.timeout_ms) as writer:
        for t in range(steps):
            writer.append(_step(t, num_envs))
        writer.flush()
        return writer.items_written


def _items_of(batch):
    """(env, k) of every column of a time-major batch, checking its contents."""
    out = []
    for b in range(batch.reward.shape[1]):
        env, start = divmod(int(batch.reward[0, b]), 100)
        assert start % T == 0, f"item starts at step {start}, not a multiple of T={T}"
        steps = start + np.arange(T + 1)  # item k covers steps kT .. kT + T
        np.testing.assert_array_equal(batch.reward[:, b], steps + 100.0 * env)
        np.testing.assert_array_equal(batch.action[:, b], steps)
        np.testing.assert_array_equal(
            batch.observation[:, b], np.broadcast_to(steps[:, None, None, None], (T + 1,) + OBS)
        )
        np.testing.assert_array_equal(batch.behaviour_logits[:, b, 0], steps)
        np.testing.assert_array_equal(batch.behaviour_logits[:, b, 1], env)
        np.testing.assert_array_equal(batch.first[:, b], (steps == 0).astype(np.float32))
        np.testing.assert_array_equal(batch.discount[:, b], 1.0)
        out.append((env, start // T))
    return out


def _next_within(it, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return next(it)
        except ReplayTimeoutError:
            if time.monotonic() > deadline:
                raise


def _next_batch(it, bound_s=30):
    """next(it), asked again after each of its own timeouts (as its error
    says to) until `bound_s`, and failed as a hang 10 s after that: on a
    loaded host a batch may take longer than the 1.5 s these tests give the
    iterator to keep their empty-table checks short."""
    return _bounded(lambda: _next_within(it, bound_s), bound_s + 10)


def test_queue_overlap_time_major_and_each_item_sampled_once(make_server):
    cfg = ReplayConfig(mode="queue", timeout_ms=1500, prefetch_batches=1)
    address = make_server(cfg)
    assert address.startswith("localhost:")

    # 3T + 1 steps -> items at steps T+1, 2T+1, 3T+1: 3 per env.
    assert _write(address, cfg, 3 * T + 1) == N_ENVS * 3
    assert table_size(address) == N_ENVS * 3

    it = make_dataset(address, BATCH, cfg)
    seen = []
    for _ in range(3):
        batch = _next_batch(it)
        assert isinstance(batch, Trajectory)
        expected = {
            "observation": ((T + 1, BATCH) + OBS, np.uint8),
            "action": ((T + 1, BATCH), np.int32),
            "reward": ((T + 1, BATCH), np.float32),
            "discount": ((T + 1, BATCH), np.float32),
            "behaviour_logits": ((T + 1, BATCH, A), np.float32),
            "first": ((T + 1, BATCH), np.float32),
        }
        for name, (shape, dtype) in expected.items():
            x = getattr(batch, name)
            assert isinstance(x, np.ndarray)
            assert x.shape == shape, name
            assert x.dtype == dtype, name
        seen += _items_of(batch)

    # Every (env, k) exactly once: FIFO queue, max_times_sampled = 1.
    assert sorted(seen) == [(e, k) for e in range(N_ENVS) for k in range(3)]
    assert table_size(address) == 0
    with pytest.raises(ReplayTimeoutError):
        _bounded(lambda: next(it), 30)
    it.close()


def test_items_appear_every_T_steps_after_the_first_T_plus_1(make_server):
    cfg = ReplayConfig(mode="queue", timeout_ms=1500)
    address = make_server(cfg)
    writer = TrajectoryWriter(address, N_ENVS, T, timeout_ms=cfg.timeout_ms)
    created = [writer.append(_step(t)) for t in range(2 * T + 2)]
    # steps are 1-based here: items after step T + 1 and 2T + 1 only.
    assert [i + 1 for i, c in enumerate(created) if c] == [T + 1, 2 * T + 1]
    assert set(created) == {0, N_ENVS}
    writer.close()
    writer.close()  # idempotent
    assert table_size(address) == 2 * N_ENVS
    with pytest.raises(ReplayError, match="after close"):
        writer.append(_step(0))


def test_an_actor_waits_while_the_queue_is_full_and_goes_on_once_it_is_not(make_server):
    cfg = ReplayConfig(mode="queue", max_size=BATCH + 2, timeout_ms=1500)
    address = make_server(cfg)
    client = reverb.Client(address)
    assert wait_while_full(client, lambda: False) < 0.5  # empty: no wait
    _write(address, cfg, T + 1)  # one item per env: room for 2 more
    assert wait_while_full(client, lambda: False, room=N_ENVS) < 0.5
    t0 = time.monotonic()
    assert wait_while_full(client, lambda: time.monotonic() - t0 > 1.0, room=3) >= 1.0
    _write(address, cfg, T + 1)  # full: the table's 4 = max_size
    assert table_size(address) == BATCH + 2
    t0 = time.monotonic()
    assert wait_while_full(client, lambda: time.monotonic() - t0 > 1.0) >= 1.0  # held
    it = make_dataset(address, BATCH, cfg)
    taken = threading.Timer(1.0, lambda: next(it))  # the learner takes a batch in 1 s
    taken.start()
    waited = wait_while_full(client, lambda: time.monotonic() - t0 > 30)
    taken.join()
    # It went on once there was room: well before its own give-up at 30 s,
    # however loaded the host (the dataset prefetches, so the size drops by more).
    assert 0.5 < waited < 20.0 and table_size(address) < BATCH + 2
    it.close()


def test_max_size_not_above_batch_plus_one_raises():
    for max_size in (BATCH, BATCH + 1):
        with pytest.raises(ValueError, match=f"max_size={max_size}"):
            make_tables(ReplayConfig(mode="queue", max_size=max_size), BATCH, OBS, A, T)
    with pytest.raises(ValueError, match="max_size=33"):
        make_tables(ReplayConfig(mode="uniform", max_size=33), 32, OBS, A, T)
    with pytest.raises(ValueError, match="min_size=50"):
        make_tables(ReplayConfig(mode="queue", max_size=20, min_size=50), BATCH, OBS, A, T)


def test_table_settings():
    (queue,) = make_tables(ReplayConfig(mode="queue"), BATCH, OBS, A, T)
    info = queue.info
    assert (info.name, info.max_size, info.max_times_sampled) == (TABLE, 10 * BATCH, 1)
    assert info.sampler_options.uniform and info.remover_options.fifo
    assert info.signature.observation.shape == (T + 1,) + OBS
    assert info.signature.observation.dtype == tf.uint8
    assert info.signature.behaviour_logits.shape == (T + 1, A)

    (uniform,) = make_tables(
        ReplayConfig(mode="uniform", max_size=50, samples_per_insert=4.0, min_size=5),
        BATCH,
        OBS,
        A,
        T,
    )
    info = uniform.info
    assert (info.max_size, info.max_times_sampled) == (50, 0)
    assert info.rate_limiter_info.samples_per_insert == 4.0
    assert info.rate_limiter_info.min_size_to_sample == 5


def test_uniform_items_are_sampled_more_than_once(make_server):
    cfg = ReplayConfig(
        mode="uniform", samples_per_insert=8.0, min_size=1, timeout_ms=1500, prefetch_batches=1
    )
    address = make_server(cfg)
    assert _write(address, cfg, T + 1) == N_ENVS  # one item per env
    it = make_dataset(reverb.Client(address), BATCH, cfg)  # a client works as well
    seen = []
    for _ in range(4):
        seen += _items_of(_next_batch(it))
    it.close()
    assert set(seen) <= {(0, 0), (1, 0)}
    assert len(seen) == 8  # 8 samples of 2 items: each sampled more than once on average
    assert table_size(address) == N_ENVS  # nothing removed by sampling


def test_empty_table_times_out_with_clear_error(make_server):
    # next() is bounded at 500 ms; reverb's own wait is the learner's 30 s, as in
    # the learner node. With reverb's wait at 500 ms too, its stream would end
    # every 500 ms, and an item sampled into a batch just before an end is
    # dropped with that batch (consumed, in queue mode): two items inserted
    # across an end would never make a batch of 2.
    cfg = ReplayConfig(mode="queue", timeout_ms=30_000)
    address = make_server(cfg)
    it = make_dataset(address, BATCH, cfg, next_timeout_ms=500)
    start = time.monotonic()
    with pytest.raises(ReplayTimeoutError) as err:
        _bounded(lambda: next(it), 30)
    assert time.monotonic() - start < 25  # next()'s 500 ms, not reverb's 30 s wait
    message = str(err.value)
    assert repr(TABLE) in message and address in message and "timeout_ms=500" in message
    assert isinstance(err.value, TimeoutError)

    # Still usable: data written after the timeout is delivered (next() again
    # keeps waiting, as the error says; a loaded machine may need several).
    _write(address, cfg, T + 1)
    batch = _next_batch(it)
    assert sorted(_items_of(batch)) == [(0, 0), (1, 0)]
    it.close()


def test_stalled_stream_times_out_and_loses_nothing():
    # A stream that stalls without ending (what reverb does when the server
    # dies) must still give a bounded next(); the late batch comes next time.
    def slow():
        time.sleep(1.5)
        yield tuple(np.zeros(s, np.float32) for s in [(2, 1)] * 6)

    ds = tf.data.Dataset.from_generator(
        slow, output_signature=tuple(tf.TensorSpec((2, 1), tf.float32) for _ in range(6))
    )
    it = TrajectoryIterator(ds, "localhost:1", TABLE, 1, timeout_ms=300)
    with pytest.raises(ReplayTimeoutError, match="no progress"):
        _bounded(lambda: next(it), 30)
    batch = None
    for _ in range(20):
        try:
            batch = next(it)
            break
        except ReplayTimeoutError:
            pass
    assert isinstance(batch, Trajectory) and batch.reward.shape == (2, 1)
    it.close()


def test_no_server_gives_bounded_errors():
    address = f"localhost:{portpicker.pick_unused_port()}"
    cfg = ReplayConfig(timeout_ms=1000)
    with pytest.raises(ReplayTimeoutError, match=address):
        _bounded(lambda: TrajectoryWriter(address, N_ENVS, T, timeout_ms=1000), 30)
    with pytest.raises(ReplayTimeoutError, match=address):
        _bounded(lambda: make_dataset(address, BATCH, cfg), 30)


def test_writer_rejects_bad_steps(make_server):
    cfg = ReplayConfig(mode="queue", timeout_ms=1500)
    address = make_server(cfg)
    writer = TrajectoryWriter(address, N_ENVS, T, timeout_ms=cfg.timeout_ms)
    with pytest.raises(ValueError, match="num_envs=2"):
        writer.append(_step(0, num_envs=3))
    with pytest.raises(TypeError, match="observation"):
        writer.append(_step(0)._replace(observation=np.zeros((N_ENVS,) + OBS, np.float32)))
    writer.close()
    with pytest.raises(ReplayError, match="no table"):
        TrajectoryWriter(address, N_ENVS, T, table="nope", timeout_ms=1500)


def test_agents_and_configs_do_not_import_tensorflow():
    code = (
        "import sys, agents, agents.types, configs; "
        "assert 'tensorflow' not in sys.modules and 'reverb' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_actor_inserts_survive_a_replay_outage(tmp_path):
    """The server goes away mid-run: the writer's loop logs, backs off (1, 2 s ...)
    and carries on once a server is back on the same port; nothing hangs."""
    from replay import connect_writer, wait_until_taken

    cfg = ReplayConfig(mode="queue", timeout_ms=1_000)
    port = portpicker.pick_unused_port()
    address = f"localhost:{port}"

    def serve(k):
        return reverb.Server(
            make_tables(cfg, BATCH, OBS, A, T),
            port=port,
            checkpointer=reverb.checkpointers.DefaultCheckpointer(str(tmp_path / f"ckpt{k}")),
        )

    server = serve(0)
    lines, stop = [], threading.Event()
    log = lines.append
    writer = connect_writer(
        lambda: TrajectoryWriter(address, N_ENVS, T, timeout_ms=1_000),
        stop.is_set,
        "actor-0",
        address,
        log,
    )
    outages, steps = [], [0]

    def actor_loop():
        while not stop.is_set():
            try:
                writer.append(_step(steps[0]))
            except ReplayTimeoutError:
                outage = wait_until_taken(writer, stop.is_set, "actor-0", log)
                if outage:
                    outages.append(outage)
            steps[0] += 1
            time.sleep(0.005)

    thread = threading.Thread(target=actor_loop, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while table_size(address) < 4 and time.time() < deadline:
        time.sleep(0.1)
    server.stop()
    while not any("unreachable" in line for line in lines) and time.time() < deadline:
        time.sleep(0.1)
    steps_during = steps[0]
    time.sleep(3.0)
    assert steps[0] - steps_during <= 1, "the actor must wait, not run ahead, while replay is down"
    server = serve(1)
    try:
        while (table_size(address) < 4 or not outages) and time.time() < deadline + 30:
            time.sleep(0.1)
        assert table_size(address) >= 4, "inserts did not resume after the server came back"
        assert any("back after" in line for line in lines), lines
        assert len(outages) == 1 and outages[0] >= 3.0
        retries = [line for line in lines if "retrying in" in line]
        assert "retrying in 1 s" in retries[0] and "retrying in 2 s" in retries[1], retries
        assert all(address in line for line in retries)
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        writer.close()
        server.stop()


def test_connect_writer_backs_off_until_the_server_answers():
    from replay import connect_writer

    address = f"localhost:{portpicker.pick_unused_port()}"
    lines, calls = [], []
    stop = threading.Event()

    def make():
        calls.append(time.monotonic())
        if len(calls) >= 3:
            stop.set()
        return TrajectoryWriter(address, N_ENVS, T, timeout_ms=1_000)

    assert (
        _bounded(lambda: connect_writer(make, stop.is_set, "actor-1", address, lines.append), 30)
        is None
    )
    assert len(calls) == 3
    assert "retry 1 in 1 s" in lines[0] and "retry 2 in 2 s" in lines[1]
    assert all(address in line and "unreachable" in line for line in lines)
    assert calls[2] - calls[1] >= 2.0 + 0.9  # 1 s timeout + 2 s backoff
