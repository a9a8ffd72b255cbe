"""Engine builders shared by targets: each turns one variant's ONNX graph into the engine's artifacts (bundle
sections), or raises targets.base.BuildFailed with a deterministic reason. They know engines, not targets."""
