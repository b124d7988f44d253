"""The network: config and presets, quantised regression (eqs. 2-3), dilated ResNet trunk, heads and losses, checkpoints, the training loop."""
