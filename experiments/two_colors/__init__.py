"""The BMG paper's non-stationary two-colors grid world (section 5.1): MG vs BMG.

env.py (the grid world), agents.py (config, actor-critic and Q(lambda) agents,
meta-objectives, training), run.py (runner: `python -m experiments.two_colors.run`),
meta_grad_stats.py (estimator study: `python -m experiments.two_colors.meta_grad_stats`),
results/ (the measured runs) and README.md (setup, results, commands).
"""
