"""Haiku networks: torsos (IMPALA deep ResNet, small and tiny convnets, MLP)
and the STACX multi-head policy/value heads conditioned on the meta-parameters.

`Networks.apply(params, obs, eta)`:
  obs: [..., H, W, C] uint8 (or float), scaled to [0, 1];
  eta: [meta_dim] meta-parameter values in [0, 1] (ignored when meta_dim = 0);
  returns logits [..., heads, actions] and values [..., heads].
Computation is in the default float dtype (float64 when x64 is enabled).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from configs import NetworkConfig


class Networks(NamedTuple):
    init: Callable  # (key) -> params
    apply: Callable  # (params, obs [..., *obs_shape], eta [meta_dim]) -> (logits, values)
    num_heads: int
    num_actions: int
    meta_dim: int  # length of eta; 0 = not conditioned on meta-parameters
    observation_shape: Tuple[int, ...]


def meta_conditioning(meta_logits, meta_dim: int):
    """eta, the network's meta-parameter input: sigmoid(logits) flattened to
    [meta_dim] (values in [0, 1]), or an empty vector when meta_dim = 0."""
    if meta_dim:
        return jax.nn.sigmoid(meta_logits).reshape(-1)
    return jnp.zeros((0,), meta_logits.dtype)


class ResidualBlock(hk.Module):
    def __init__(self, channels: int, name: Optional[str] = None):
        super().__init__(name=name)
        self.channels = channels

    def __call__(self, x):
        y = hk.Conv2D(self.channels, 3)(jax.nn.relu(x))
        y = hk.Conv2D(self.channels, 3)(jax.nn.relu(y))
        return x + y


def deep_torso(x, channels: Sequence[int], blocks: int, hidden: int):
    """IMPALA deep ResNet (Espeholt et al. 2018): per section conv 3x3,
    max-pool 3x3 stride 2, `blocks` residual blocks; then ReLU, linear, ReLU."""
    for c in channels:
        x = hk.Conv2D(c, 3)(x)
        x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
        for _ in range(blocks):
            x = ResidualBlock(c)(x)
    x = hk.Flatten()(jax.nn.relu(x))
    return jax.nn.relu(hk.Linear(hidden)(x))


def small_torso(x, channels: Sequence[int], hidden: int):
    """Two strided convs (8x8/4, 4x4/2), then a ReLU linear layer: debug runs."""
    c1, c2 = (tuple(channels) + tuple(channels))[:2]
    x = jax.nn.relu(hk.Conv2D(c1, 8, stride=4, padding="VALID")(x))
    x = jax.nn.relu(hk.Conv2D(c2, 4, stride=2, padding="VALID")(x))
    return jax.nn.relu(hk.Linear(hidden)(hk.Flatten()(x)))


def tiny_torso(x, channels: Sequence[int], hidden: int):
    """One 3x3/2 conv and a ReLU linear layer: tests and the Catch game."""
    x = jax.nn.relu(hk.Conv2D(channels[0], 3, stride=2)(x))
    return jax.nn.relu(hk.Linear(hidden)(hk.Flatten()(x)))


def mlp_torso(x, hidden: int, layers: int = 1):
    """Flatten, then `layers` tanh layers (smooth: used for finite differences)."""
    x = hk.Flatten()(x)
    for _ in range(layers):
        x = jnp.tanh(hk.Linear(hidden)(x))
    return x


def make_networks_from_torso(
    torso: Callable,
    observation_shape: Sequence[int],
    num_actions: int,
    num_heads: int = 1,
    meta_dim: int = 0,
    meta_embedding: int = 16,
) -> Networks:
    """Wrap a torso `(x [N, *obs_shape] float) -> [N, F]` with the heads.

    With meta_dim > 0 the torso output is concatenated with a learned linear
    embedding of eta (STACX). Each head has its own policy and value layer.
    """
    obs_shape = tuple(observation_shape)
    obs_rank = len(obs_shape)

    def forward(obs, eta):
        lead = obs.shape[: obs.ndim - obs_rank]
        x = jnp.reshape(obs, (-1,) + obs_shape).astype(jnp.result_type(float))
        if jnp.issubdtype(obs.dtype, jnp.integer):
            x = x / 255.0
        h = torso(x)
        if meta_dim:
            emb = hk.Linear(meta_embedding, name="meta_embedding")(eta.astype(h.dtype))
            h = jnp.concatenate([h, jnp.broadcast_to(emb, h.shape[:1] + emb.shape)], axis=-1)
        logits = hk.Linear(num_heads * num_actions, name="policy")(h)
        values = hk.Linear(num_heads, name="value")(h)
        logits = jnp.reshape(logits, lead + (num_heads, num_actions))
        values = jnp.reshape(values, lead + (num_heads,))
        return logits, values

    net = hk.without_apply_rng(hk.transform(forward))
    dummy_obs = np.zeros((1,) + obs_shape, np.uint8)

    def init(key):
        return net.init(key, dummy_obs, jnp.zeros((meta_dim,)))

    def apply(params, obs, eta=None):
        if eta is None:
            eta = jnp.zeros((meta_dim,))
        return net.apply(params, obs, eta)

    return Networks(init, apply, num_heads, num_actions, meta_dim, obs_shape)


def make_networks(
    cfg: NetworkConfig,
    observation_shape: Sequence[int],
    num_actions: int,
    num_heads: int = 1,
    meta_dim: int = 0,
) -> Networks:
    """The network of a config: `deep`, `small` or `tiny` torso plus heads."""
    torsos = {
        "deep": lambda x: deep_torso(x, cfg.channels, cfg.blocks_per_section, cfg.hidden),
        "small": lambda x: small_torso(x, cfg.channels, cfg.hidden),
        "tiny": lambda x: tiny_torso(x, cfg.channels, cfg.hidden),
    }
    torso = torsos.get(cfg.kind)
    if torso is None:  # validated by NetworkConfig; kept for a clear message if bypassed
        raise ValueError(
            f"NetworkConfig.kind={cfg.kind!r} is not allowed: "
            f"must be one of ['small', 'deep', 'tiny']"
        )
    return make_networks_from_torso(
        torso, observation_shape, num_actions, num_heads, meta_dim, cfg.meta_embedding
    )
