"""Ray Train + DeepSpeed fine-tuning: config builder, per-worker loop, checkpoints, driver."""
