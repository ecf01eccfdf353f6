"""The non-stationary two-colors grid world (BMG paper, section 5.1) as pure JAX.

A 5 x 5 grid holds the agent and two items (item 0 and item 1, the two
colours). Moving onto an item picks it up: +1 if its colour pays now, -1
otherwise; then the agent and both items respawn at three random distinct
cells. Which colour pays swaps every `swap_every` steps: item 0 pays during
steps [0, swap_every), item 1 during [swap_every, 2 * swap_every), and so on
(step t is the t-th call of `step`, counted from 0). Every other step gives 0.
The task never ends (no episodes; the agent discounts with 0.99).

Actions (4): 0 = up (y - 1), 1 = down (y + 1), 2 = left (x - 1),
3 = right (x + 1); a move into the wall leaves the agent in place.

Observation (30 float values): one-hot x then one-hot y (5 + 5 values) of the
agent, item 0 and item 1, in that order. It does not say which colour pays.

`reset(key) -> EnvState`, `step(state, action, key) -> (state, obs, reward)`
and `observe(state)` are pure, so many seeds run under `jax.vmap` and long
runs under `lax.scan`.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

SIZE = 5
NUM_ACTIONS = 4
OBS_DIM = 6 * SIZE  # (x, y) one-hot of the agent and two items
SWAP_EVERY = 100_000
# (dx, dy) per action: up, down, left, right.
MOVES = ((0, -1), (0, 1), (-1, 0), (1, 0))


class EnvState(NamedTuple):
    agent: Array  # int32 [2]: (x, y)
    items: Array  # int32 [2, 2]: (x, y) of item 0, item 1
    t: Array  # int32 []: steps taken so far


def _random_cells(key) -> Array:
    """Three distinct cells, uniformly, as int32 [3, 2] (x, y).

    Draws u_i uniform in [0, 25 - i) and skips the cells already taken (in
    ascending order), which is cheaper than a permutation of all 25 cells."""
    n = SIZE * SIZE
    u = jax.random.randint(key, (3,), 0, jnp.array([n, n - 1, n - 2]))
    c0 = u[0]
    c1 = u[1] + (u[1] >= c0)
    lo, hi = jnp.minimum(c0, c1), jnp.maximum(c0, c1)
    c2 = u[2] + (u[2] >= lo)
    c2 = c2 + (c2 >= hi)
    cells = jnp.stack([c0, c1, c2])
    return jnp.stack([cells % SIZE, cells // SIZE], axis=-1).astype(jnp.int32)


def reset(key) -> EnvState:
    cells = _random_cells(key)
    return EnvState(agent=cells[0], items=cells[1:], t=jnp.zeros((), jnp.int32))


def paying_item(t, swap_every: int = SWAP_EVERY) -> Array:
    """Index of the item that pays +1 at step t (0 first, swapping every `swap_every`)."""
    return (jnp.asarray(t) // swap_every) % 2


def observe(state: EnvState) -> Array:
    """[30] float32: one-hot x, one-hot y of agent, item 0, item 1."""
    xy = jnp.concatenate([state.agent[None], state.items], axis=0)  # [3, 2]
    return jax.nn.one_hot(xy, SIZE, dtype=jnp.float32).reshape(OBS_DIM)


def step(
    state: EnvState, action, key, swap_every: int = SWAP_EVERY
) -> Tuple[EnvState, Array, Array]:
    """One move. Returns (next state, its observation, reward float32)."""
    move = jnp.asarray(MOVES, jnp.int32)[action]
    agent = jnp.clip(state.agent + move, 0, SIZE - 1)
    hit = jnp.all(agent[None] == state.items, axis=-1)  # [2]; items never share a cell
    picked = jnp.any(hit)
    good = paying_item(state.t, swap_every)
    reward = jnp.where(picked, jnp.where(hit[good], 1.0, -1.0), 0.0).astype(jnp.float32)
    cells = _random_cells(key)
    agent = jnp.where(picked, cells[0], agent)
    items = jnp.where(picked, cells[1:], state.items)
    new = EnvState(agent=agent, items=items, t=state.t + 1)
    return new, observe(new), reward
