"""Memory: the peak recorded per step, the estimates made before converting, the reference that fits."""
