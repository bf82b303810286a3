"""Model compression for deployment: pruning and distillation."""
