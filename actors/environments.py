"""Batched environments for the actors: real Atari (ale-py) and the built-in Catch game.

Every environment here is a `VectorEnv`: N sub-environments stepped together,
with SAME-STEP auto-reset. When a sub-environment's episode ends on a step, that
step reports the (unclipped) reward and `done=True`, and its observation is
already the first observation of the next episode. No dummy "reset step" ever
reaches the caller, so every transition an actor records is a real one:

    obs = env.reset()                       # [N, H, W, C] uint8, all envs start an episode
    while True:
        res = env.step(actions)             # actions [N] int in [0, num_actions)
        # res.reward[i] was earned by actions[i] taken at obs[i];
        # res.done[i] -> res.observation[i] is the first frame of a new episode.

The overlapped actor uses the asynchronous form of the same envs, envpool's
pattern: `start()` begins every episode, then each `recv()` returns the next
`batch_size` envs that are ready (their ids and a `StepResult` for those
envs) and `send(actions)` gives exactly those envs their next actions, so the
emulators step one batch while the policy runs on another:

    env.start()
    while True:
        ids, res = env.recv()               # ids [k]: which envs; res fields [k, ...]
        env.send(policy(res.observation))   # actions for envs `ids`, in that order
        # an env's first result after start() has first=True, done=False and
        # reward 0: it is its first observation, not a transition.

Observations are channel-last `[H, W, C] = [frame_size, frame_size, frame_stack]`
uint8 with the newest frame last; at the start of an episode the older frames of
the stack are zeros (this is what ale-py does, and Catch mirrors it).

Atari follows docs/design.md section 6 with every setting passed explicitly to
`ale_py.vector_env.AtariVectorEnv` (its defaults differ from the protocol: it
clips rewards, presses FIRE on reset and uses next-step auto-reset).
"""

from __future__ import annotations

import abc
import collections
import functools
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from configs import EnvConfig
from configs.games import get_game

__all__ = [
    "StepResult",
    "VectorEnv",
    "AtariVectorEnv",
    "CatchVectorEnv",
    "make_vector_env",
    "num_actions",
    "CATCH_ROWS",
    "CATCH_COLUMNS",
    "CATCH_NUM_ACTIONS",
]

# A finished episode: (env_index, unclipped_return, episode_frames).
EpisodeReturn = Tuple[int, float, int]


class StepResult(NamedTuple):
    """What one `VectorEnv.step` returns, for N sub-environments."""

    observation: (
        np.ndarray
    )  # [N, H, W, C] uint8; for done envs already the new episode's first observation
    reward: np.ndarray  # [N] float32, UNCLIPPED game reward of this step (points)
    done: (
        np.ndarray
    )  # [N] bool, the episode ended on this step (terminated, or truncated by the frame cap)
    first: np.ndarray  # [N] bool, `observation` starts a new episode: == done, or an
    # env's first observation after `start()` (asynchronous API)
    episode_returns: List[
        EpisodeReturn
    ]  # [(env_index, unclipped_return, episode_frames)] ended this step


class VectorEnv(abc.ABC):
    """N environments stepped in lock-step, with same-step auto-reset.

    Attributes:
        num_envs: N.
        num_actions: size of the discrete action set; actions are ints in [0, num_actions).
        observation_shape: (H, W, C) == EnvConfig.observation_shape.
        frames_per_step: emulator frames per agent step (frame_skip for Atari, 1 for Catch).
        batch_size: envs per `recv()` of the asynchronous API (num_envs: all at once).

    The asynchronous API's default steps the envs in place when `send` is
    called (`_step_ids`), batches in a fixed round-robin order; ale-py's
    envs step in their own threads instead (`AtariVectorEnv`).
    """

    num_envs: int
    batch_size: int
    num_actions: int
    observation_shape: Tuple[int, int, int]
    frames_per_step: int

    @abc.abstractmethod
    def reset(self) -> np.ndarray:
        """Start a new episode in every env; returns observations [N, H, W, C] uint8.

        Every env's `first` flag is conceptually True after this call."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Take `actions` ([N] ints in [0, num_actions)) in every env; see `StepResult`."""

    @property
    @abc.abstractmethod
    def episode_frames(self) -> np.ndarray:
        """[N] int64: emulator frames elapsed so far in each env's current episode.

        For Atari this includes the random no-op frames of the episode's start."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources; idempotent."""

    def start(self) -> None:
        """Begin an episode in every env; the first observations come from `recv()`."""
        obs, n, k = self.reset(), self.num_envs, self.batch_size
        self._ready = collections.deque(
            (
                ids,
                StepResult(
                    obs[ids], np.zeros(k, np.float32), np.zeros(k, bool), np.ones(k, bool), []
                ),
            )
            for ids in np.split(np.arange(n), n // k)
        )
        self._last_ids = None

    def recv(self) -> Tuple[np.ndarray, StepResult]:
        """(env ids [k], their StepResult) of the next `batch_size` ready envs."""
        if not getattr(self, "_ready", None):
            raise RuntimeError(
                "recv() with no envs in flight: call start(), and send() after each recv()"
            )
        ids, res = self._ready.popleft()
        self._last_ids = ids
        return ids, res

    def send(self, actions: np.ndarray) -> None:
        """Next actions ([k] ints) for the envs of the last `recv()`, in its order."""
        ids, self._last_ids = getattr(self, "_last_ids", None), None
        if ids is None:
            raise RuntimeError("send() must follow a recv(): it acts for the envs recv() returned")
        self._ready.append((ids, self._step_ids(ids, self._check_actions(actions, len(ids)))))

    def _step_ids(self, ids: np.ndarray, actions: np.ndarray) -> StepResult:
        """Step the envs `ids` ([k]) with `actions` ([k]); their StepResult."""
        raise NotImplementedError(f"{type(self).__name__} has no asynchronous API")

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_actions(self, actions: np.ndarray, n: Optional[int] = None) -> np.ndarray:
        """Validate `actions` ([n] ints in range, n = N by default) and return them as int32."""
        a = np.asarray(actions)
        n = self.num_envs if n is None else n
        if a.shape != (n,):
            raise ValueError(f"actions must have shape ({n},), got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.num_actions):
            raise ValueError(f"actions must be in [0, {self.num_actions}), got {a.tolist()}")
        return a.astype(np.int32, copy=False)


def _batch_size(num_envs: int, batch_size: Optional[int]) -> int:
    """`batch_size` (None: num_envs), checked to divide num_envs."""
    k = num_envs if batch_size is None else batch_size
    if not isinstance(k, (int, np.integer)) or k < 1 or num_envs % k:
        raise ValueError(
            f"batch_size={batch_size!r} must be a whole number >= 1 "
            f"that divides num_envs={num_envs}"
        )
    return int(k)


def _per_env_seeds(seed: int, num_envs: int) -> np.ndarray:
    """[num_envs] int64 seeds in [0, 2**31), derived from `seed` by SeedSequence.

    Unlike `seed + i`, vector envs built with consecutive seeds (e.g. one per
    actor) do not share sub-environment seeds."""
    state = np.random.SeedSequence(int(seed)).generate_state(num_envs, dtype=np.uint32)
    return (state & np.uint32(0x7FFFFFFF)).astype(np.int64)


# ----------------------------------------------------------------------------
# Atari
# ----------------------------------------------------------------------------
class AtariVectorEnv(VectorEnv):
    """N Atari games through ale-py's C++ `AtariVectorEnv` (threaded preprocessing).

    Protocol (docs/design.md section 6), every value explicit: action repeat
    `cfg.frame_skip` with max-pool over the last two frames; grayscale resized
    to `cfg.frame_size` squared; stack of `cfg.frame_stack`; 0..`cfg.noop_max`
    random no-ops at every episode start; sticky actions with probability
    `cfg.sticky_action_prob`; minimal (or full) action set; NO reward clipping
    (the learner clips); no life-loss episodes; no FIRE on reset.

    Episode cap: ALE truncates an episode once `cfg.max_episode_frames` frames
    of agent steps have been emulated (the last step is cut short to land on
    the cap exactly). The reset no-op frames (at most `noop_max`) are not
    counted by that cap, but ARE counted in the reported `episode_frames`, so a
    capped episode reports between `cap` and `cap + noop_max` frames.

    Auto-reset: ale-py is built with `autoreset_mode=SAME_STEP`, which does
    exactly what `StepResult` promises (the terminal step's observation is the
    new episode's first one; the final observation of the old episode is only
    in ale-py's info dict and is dropped here).

    Seeding: sub-environment i is seeded with the i-th value of
    `SeedSequence(seed)`; the first `reset()` applies the seeds, later resets
    continue each env's random stream. Same seed + same actions = same frames,
    independent of `num_threads`.
    """

    def __init__(
        self,
        cfg: EnvConfig,
        num_envs: int,
        seed: int,
        num_threads: int = 1,
        batch_size: Optional[int] = None,
    ):
        if cfg.kind != "atari":
            raise ValueError(f"AtariVectorEnv needs EnvConfig.kind='atari', got {cfg.kind!r}")
        from ale_py.vector_env import AtariVectorEnv as _AleVectorEnv  # noqa: PLC0415 (ALE: only Atari games)
        from gymnasium.vector import AutoresetMode  # noqa: PLC0415 (ALE: only Atari games)

        self.cfg = cfg
        self.num_envs = int(num_envs)
        self.batch_size = _batch_size(self.num_envs, batch_size)
        self.observation_shape = cfg.observation_shape
        self.frames_per_step = cfg.frames_per_step
        self.game_id = get_game(cfg.game).ale_id
        self._seeds: Optional[np.ndarray] = _per_env_seeds(seed, self.num_envs)
        self._env = _AleVectorEnv(
            self.game_id,
            self.num_envs,
            # num_envs: synchronous, every step returns all N envs; fewer:
            # recv returns the first batch_size envs that are ready.
            batch_size=self.batch_size,
            num_threads=int(num_threads),
            thread_affinity_offset=-1,
            max_num_frames_per_episode=cfg.max_episode_frames,
            repeat_action_probability=float(cfg.sticky_action_prob),
            full_action_space=cfg.full_action_space,
            continuous=False,
            autoreset_mode=AutoresetMode.SAME_STEP,
            img_height=cfg.frame_size,
            img_width=cfg.frame_size,
            grayscale=True,
            stack_num=cfg.frame_stack,
            frameskip=cfg.frame_skip,
            maxpool=True,
            noop_max=cfg.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=False,
        )
        self.num_actions = int(self._env.single_action_space.n)  # type: ignore[attr-defined]  # Discrete
        # Per-env bookkeeping for `episode_returns` (float64 sums of raw rewards).
        self._returns = np.zeros(self.num_envs, np.float64)
        # Cumulative emulator frame (ale `frame_number`) at which each env's current episode began.
        self._episode_start = np.zeros(self.num_envs, np.int64)
        self._episode_frame_number = np.zeros(self.num_envs, np.int64)
        self._started = np.zeros(self.num_envs, bool)  # has had its first observation
        self._needs_reset = True
        self._closed = False
        self._first_batch = None  # async: the batch that reset() returned, not yet received
        self._last_ids: Optional[np.ndarray] = None  # type: ignore[assignment]  # gymnasium types it None
        self._in_flight = 0  # async: batches sent (or reset) and not yet received

    @staticmethod
    def _to_channel_last(obs: np.ndarray) -> np.ndarray:
        """ale-py's [N, stack, H, W] -> [N, H, W, stack], contiguous uint8."""
        return np.ascontiguousarray(np.moveaxis(obs, 1, -1))

    def _sync_only(self, method: str) -> None:
        if self.batch_size != self.num_envs:
            raise RuntimeError(
                f"{method}() steps all envs together; this env is asynchronous "
                f"(batch_size={self.batch_size} < num_envs={self.num_envs}): use start/recv/send"
            )

    def _reset_all(self):
        if self._closed:
            raise RuntimeError("reset() on a closed env")
        seeds, self._seeds = self._seeds, None
        obs, info = self._env.reset(seed=seeds)
        self._started[:] = False
        self._returns[:] = 0.0
        self._needs_reset = False
        return obs, info

    def _collect(self, obs, reward, terminated, truncated, info) -> Tuple[np.ndarray, StepResult]:
        """(env ids, StepResult) from one ale-py batch; keeps the per-env
        return and episode-start bookkeeping. An env's first result after a
        reset is its first observation: reward 0, not done, first."""
        ids = np.asarray(info["env_id"], np.int64)
        fresh = ~self._started[ids]
        reward = np.where(fresh, 0.0, reward).astype(np.float32)
        done = np.logical_or(terminated, truncated) & ~fresh
        efn = info["episode_frame_number"].astype(np.int64)
        # For a done env, ale has already reset it: frame_number - episode_frame_number
        # is the cumulative frame at which the old episode ended and the new one began.
        start = info["frame_number"].astype(np.int64) - efn
        self._episode_start[ids[fresh]] = start[fresh]
        self._started[ids] = True
        self._returns[ids] += reward
        episode_returns: List[EpisodeReturn] = []
        for j in np.flatnonzero(done):
            i = ids[j]
            frames = int(start[j] - self._episode_start[i])
            episode_returns.append((int(i), float(self._returns[i]), frames))
            self._returns[i] = 0.0
            self._episode_start[i] = start[j]
        self._episode_frame_number[ids] = efn
        obs = self._to_channel_last(obs)
        return ids, StepResult(obs, reward, done, done | fresh, episode_returns)

    def reset(self) -> np.ndarray:
        self._sync_only("reset")
        obs, info = self._reset_all()
        zeros = np.zeros(self.num_envs, bool)
        ids, res = self._collect(obs, zeros, zeros, zeros, info)
        self._check_env_ids(ids)
        return res.observation

    def step(self, actions: np.ndarray) -> StepResult:
        self._sync_only("step")
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        ids, res = self._collect(*self._env.step(self._check_actions(actions)))
        self._check_env_ids(ids)
        return res

    def start(self) -> None:
        self._first_batch = self._reset_all()
        self._in_flight, self._last_ids = self.num_envs // self.batch_size, None

    def recv(self) -> Tuple[np.ndarray, StepResult]:
        if self._in_flight == 0:
            raise RuntimeError(
                "recv() with no envs in flight: call start(), and send() after each recv()"
            )
        self._in_flight -= 1
        if self._first_batch is not None:
            (obs, info), self._first_batch = self._first_batch, None
            zeros = np.zeros(self.batch_size, bool)
            ids, res = self._collect(obs, zeros, zeros, zeros, info)
        else:
            ids, res = self._collect(*self._env.recv())
        self._last_ids = ids
        return ids, res

    def send(self, actions: np.ndarray) -> None:
        if self._last_ids is None:
            raise RuntimeError("send() must follow a recv(): it acts for the envs recv() returned")
        a = self._check_actions(actions, len(self._last_ids))
        self._env.send(a)
        self._last_ids = None
        self._in_flight += 1

    def _check_env_ids(self, ids: np.ndarray) -> None:
        if not np.array_equal(ids, np.arange(self.num_envs)):
            raise RuntimeError(f"ale-py returned envs out of order: {ids}")

    @property
    def episode_frames(self) -> np.ndarray:
        return self._episode_frame_number.copy()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()


@functools.lru_cache(maxsize=None)
def _atari_num_actions(ale_id: str, full_action_space: bool) -> int:
    """Size of the game's minimal (or the full, 18) action set; loads the ROM only."""
    import ale_py  # noqa: PLC0415 (ALE: only Atari games)
    from ale_py import roms  # noqa: PLC0415 (ALE: only Atari games)

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    rom = roms.get_rom_path(ale_id)
    if rom is None:
        raise ValueError(f"no ROM for {ale_id!r} in ale-py's bundled ROMs")
    ale.loadROM(rom)
    actions = ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet()
    return len(actions)


# ----------------------------------------------------------------------------
# Catch
# ----------------------------------------------------------------------------
CATCH_ROWS = 10
CATCH_COLUMNS = 5
CATCH_NUM_ACTIONS = 3  # 0: left, 1: stay, 2: right


class CatchVectorEnv(VectorEnv):
    """Catch: a 10x5 pixel game, numpy-vectorised over N envs.

    A ball starts in row 0 at a uniformly random column and falls one row per
    step; the paddle (last row, starting in the middle column 2) moves
    left/stay/right (actions 0/1/2, clamped at the edges) on every step. The
    episode lasts exactly `CATCH_ROWS - 1 = 9` steps: on the step the ball
    reaches the last row the reward is +1 if the paddle is under it, else -1;
    every other reward is 0.

    A uniformly random policy catches with probability exactly 1/5 (the ball's
    column is uniform and independent of the paddle), so its expected return
    is 0.2 - 0.8 = -0.6; moving toward the ball always catches (return +1).

    Frames: the binary 10x5 grid (ball and paddle pixels 255, else 0)
    nearest-neighbour resized to frame_size x frame_size (pixel row y shows
    grid row y * 10 // frame_size, likewise for columns), stacked over
    frame_stack with the newest frame last and zeros before an episode's first
    frame. One step is one frame (`frames_per_step = 1`). Randomness comes from
    one `np.random.Generator(seed)` shared by the N envs.
    """

    def __init__(self, cfg: EnvConfig, num_envs: int, seed: int, batch_size: Optional[int] = None):
        if cfg.kind != "catch":
            raise ValueError(f"CatchVectorEnv needs EnvConfig.kind='catch', got {cfg.kind!r}")
        if cfg.frame_size < max(CATCH_ROWS, CATCH_COLUMNS):
            raise ValueError(
                f"catch needs frame_size >= {max(CATCH_ROWS, CATCH_COLUMNS)} so every "
                f"grid cell is visible, got {cfg.frame_size}"
            )
        self.cfg = cfg
        self.num_envs = int(num_envs)
        self.batch_size = _batch_size(self.num_envs, batch_size)
        self.num_actions = CATCH_NUM_ACTIONS
        self.observation_shape = cfg.observation_shape
        self.frames_per_step = cfg.frames_per_step
        self._rng = np.random.default_rng(seed)
        size = cfg.frame_size
        self._pixel_rows = (np.arange(size) * CATCH_ROWS) // size  # [H] grid row of each pixel row
        self._pixel_cols = (
            np.arange(size) * CATCH_COLUMNS
        ) // size  # [W] grid column of each pixel column
        n = self.num_envs
        self._ball_row = np.zeros(n, np.int64)
        self._ball_col = np.zeros(n, np.int64)
        self._paddle_col = np.zeros(n, np.int64)
        self._steps = np.zeros(n, np.int64)
        self._obs = np.zeros((n,) + self.observation_shape, np.uint8)  # [N, H, W, C]
        self._needs_reset = True

    def _start_episodes(self, mask: np.ndarray) -> None:
        """Begin a new episode in the envs where `mask` ([N] bool) is True."""
        k = int(mask.sum())
        self._ball_row[mask] = 0
        self._ball_col[mask] = self._rng.integers(0, CATCH_COLUMNS, size=k)
        self._paddle_col[mask] = CATCH_COLUMNS // 2
        self._steps[mask] = 0

    def _render(self) -> np.ndarray:
        """[N, H, W] uint8 frames of the current states."""
        n = self.num_envs
        grid = np.zeros((n, CATCH_ROWS, CATCH_COLUMNS), np.uint8)
        envs = np.arange(n)
        grid[envs, self._ball_row, self._ball_col] = 255
        grid[envs, CATCH_ROWS - 1, self._paddle_col] = 255
        return grid[:, self._pixel_rows][:, :, self._pixel_cols]

    def reset(self) -> np.ndarray:
        self._start_episodes(np.ones(self.num_envs, bool))
        self._obs[:] = 0
        self._obs[..., -1] = self._render()
        self._needs_reset = False
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        return self._step_ids(np.arange(self.num_envs), self._check_actions(actions))

    def _step_ids(self, ids: np.ndarray, actions: np.ndarray) -> StepResult:
        a = actions.astype(np.int64)
        self._paddle_col[ids] = np.clip(self._paddle_col[ids] + a - 1, 0, CATCH_COLUMNS - 1)
        self._ball_row[ids] += 1
        self._steps[ids] += 1
        done = self._ball_row[ids] == CATCH_ROWS - 1
        caught = self._paddle_col[ids] == self._ball_col[ids]
        reward = np.where(done, np.where(caught, 1.0, -1.0), 0.0).astype(np.float32)
        # Each Catch episode has a single non-zero reward, on its last step.
        episode_returns: List[EpisodeReturn] = [
            (int(ids[j]), float(reward[j]), int(self._steps[ids[j]])) for j in np.flatnonzero(done)
        ]
        ended = np.zeros(self.num_envs, bool)
        ended[ids[done]] = True
        self._start_episodes(ended)
        obs = self._obs[ids]
        obs[..., :-1] = obs[..., 1:]
        obs[done] = 0
        obs[..., -1] = self._render()[ids]
        self._obs[ids] = obs
        return StepResult(obs, reward, done, done.copy(), episode_returns)

    @property
    def episode_frames(self) -> np.ndarray:
        return self._steps.copy()

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------
def make_vector_env(
    cfg: EnvConfig,
    num_envs: int,
    seed: int,
    num_threads: int = 1,
    batch_size: Optional[int] = None,
) -> VectorEnv:
    """Build `num_envs` environments of `cfg`'s kind.

    Args:
        cfg: the environment configuration.
        num_envs: N >= 1 sub-environments.
        seed: seeds all randomness (Atari: per-env seeds derived by SeedSequence).
        num_threads: ale-py worker threads (Atari only; ignored by Catch).
        batch_size: envs per `recv()` of the asynchronous API, dividing N
            (None: N; with fewer, only the asynchronous API steps the env).
    """
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
    if cfg.kind == "atari":
        return AtariVectorEnv(cfg, int(num_envs), seed, int(num_threads), batch_size)
    if cfg.kind == "catch":
        return CatchVectorEnv(cfg, int(num_envs), seed, batch_size)
    raise ValueError(f"unknown EnvConfig.kind {cfg.kind!r}")


def num_actions(cfg: EnvConfig) -> int:
    """Number of discrete actions of `cfg`'s environment (Atari: minimal set unless
    `full_action_space`, found by loading the ROM once; Catch: 3)."""
    if cfg.kind == "catch":
        return CATCH_NUM_ACTIONS
    if cfg.kind == "atari":
        return _atari_num_actions(get_game(cfg.game).ale_id, cfg.full_action_space)
    raise ValueError(f"unknown EnvConfig.kind {cfg.kind!r}")
