"""The numerical core: parameters, the VGG-19 network and its weights, the losses, colour
control, the batched L-BFGS and the `Stylizer` that runs the Gatys optimization.

It imports nothing from the rest of `pipeline` (tests/test_layers.py walks the imports): no Ray,
no storage, no job model. Images come in and go out as tensors.
"""
