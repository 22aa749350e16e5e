"""Models: sklearn baselines and the Lightning TCN behind one small interface (fit, logits, state), and the calibrators that map logits to p_hat."""
