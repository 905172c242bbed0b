"""The model layer: the recurrent network, its losses, the jitted training step, devices and weights."""
