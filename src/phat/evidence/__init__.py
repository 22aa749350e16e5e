"""Evidence over time: walk-forward refits, the stitched out-of-sample record, its score
decomposition and significance against a ladder of baselines (docs/walkforward.md)."""
