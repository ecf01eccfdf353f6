"""Distributed STACX / BMG agent for the 57 Atari games (JAX, Launchpad, Reverb).

Pins follow the stack that runs together on Python 3.10 (docs/operations.md, "Stack");
`requirements-lock.txt` is the full, reproducible lock that `make venv` installs.
On accelerator hosts only the jax extra changes: `pip install -e .[cuda]` or `.[tpu]`.
"""
from setuptools import setup

JAX_VERSION = "0.6.2"

setup(
    name="stacx-bmg",
    version="0.1.0",
    description="IMPALA / STACX / BMG distributed agents for Atari-57 in JAX",
    python_requires=">=3.10,<3.11",
    packages=[
        "agents",
        "actors",
        "learner",
        "replay",
        "configs",
        "launch",
        "utils",
        "experiments",
        "experiments.two_colors",
    ],
    package_data={"configs": ["data/*.csv"]},
    include_package_data=True,
    install_requires=[
        f"jax=={JAX_VERSION}",
        f"jaxlib=={JAX_VERSION}",
        "dm-haiku==0.0.17",
        "optax",
        "rlax",
        "chex",
        "tensorflow-probability==0.16.0",
        "tensorflow-cpu==2.8.4",
        "dm-reverb==0.7.3",
        "dm-launchpad==0.5.2",
        "protobuf<3.20",
        "numpy<2",
        "gymnasium[atari]>=1.0,<2",
        "ale-py>=0.11.1,<0.13",
        "opencv-python-headless<4.11",
        "absl-py",
        "tensorboardX",
        "matplotlib",
    ],
    extras_require={
        "cuda": [f"jax[cuda12]=={JAX_VERSION}"],
        "tpu": [f"jax[tpu]=={JAX_VERSION}"],
        "test": ["pytest"],
    },
)
