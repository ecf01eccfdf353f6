"""The BMG paper's non-stationary two-colors grid world (section 5.1): MG vs BMG.

env.py (the grid world), config.py (`TwoColorsConfig`, objective names),
agents.py (networks, the actor-critic and Q(lambda) agents, the meta-network),
replay.py (prioritised replay of recent rollouts), system.py (inner update,
meta-objectives, one seed's training as one `lax.scan`), run.py (runner:
`python -m experiments.two_colors.run`), q_compare.py and q_diagnosis.py (the
Q(lambda) studies), meta_grad_stats.py (estimator study:
`python -m experiments.two_colors.meta_grad_stats`), results/ (the measured
runs) and README.md (setup, results, commands).
"""
