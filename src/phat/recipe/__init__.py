"""The recipe that turns a configured bar series into a calibrated forecast, one home for
training and every walk-forward fold: specs (config -> contract specs), series (data, labels,
features, a split's inputs), fit (capacity, ladder, calibration) and fold (the one fold
function and the split's baselines)."""
