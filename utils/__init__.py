"""Infrastructure every role uses: the shared frame/episode counter and the
CSV / TensorBoard logs (actors, learner, evaluator, supervisor, launchers)."""
