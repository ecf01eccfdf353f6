"""The agent's JAX pieces from a RunConfig: its networks, its learner and
its acting policy. `launch.builder.Builder` wires them to the replay; tests
and benchmarks also use them alone."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from agents import learning, networks as networks_lib
from configs import RunConfig


def make_networks(
    cfg: RunConfig, observation_shape: Sequence[int], num_actions: int
) -> networks_lib.Networks:
    return networks_lib.make_networks(
        cfg.network, observation_shape, num_actions, cfg.agent.num_heads, cfg.agent.meta_dim
    )


def make_learner(
    cfg: RunConfig, networks: networks_lib.Networks, axis_name: Optional[str] = None
) -> learning.Learner:
    return learning.make_learner(
        networks,
        cfg.agent,
        cfg.meta,
        cfg.env.clip_reward,
        axis_name,
        decay_steps=cfg.inner_steps_budget,
    )


def make_policy(networks: networks_lib.Networks, greedy: bool = False) -> Callable:
    """(params, meta_logits [H, 6], obs [N, ...], key) -> (actions [N], logits [N, A]).

    Acts with the first head; `greedy` takes the argmax (evaluation)."""

    def policy(params, meta_logits, obs, key):
        eta = networks_lib.meta_conditioning(meta_logits, networks.meta_dim)
        logits, _ = networks.apply(params, obs, eta)
        logits = logits[..., 0, :]
        if greedy:
            actions = jnp.argmax(logits, axis=-1)
        else:
            actions = jax.random.categorical(key, logits)
        return actions.astype(jnp.int32), logits.astype(jnp.float32)

    return policy
