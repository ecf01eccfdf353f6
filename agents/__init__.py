"""Agent core: networks, losses and the pure learner update (plain JAX).

Imports no TensorFlow, Reverb or Launchpad. Submodules: `types` (numpy only),
`networks`, `losses`, `learning`, `parallel`, `builders`.
"""
