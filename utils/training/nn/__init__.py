"""Encoders (image, text, joint) trained with the losses of `utils.losses`."""
