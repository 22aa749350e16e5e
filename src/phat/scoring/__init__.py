"""Scoring a loaded model: its batch scoring (`PHatModel`, phat.scoring.model) and its
streaming scorer (phat.scoring.stream), from one feature definition for both. Persistence,
hashes and MLflow live above, in phat.registry."""
