"""Floor 1, the math: the Gatys optimization on tensors, with no I/O.

`params` (StyleParams: every default and choice), `sizes`, `errors` (NSTError), `network`, `taps`
and `weights` (VGG-19), `losses`, `color`, `masks` and `guides` (spatial control), `lbfgs`,
`device` (device, precision, how many pairs are stacked), `targets` (the Gram-target cache),
`engine` (the warm `Stylizer` and its loop), `records` (what it hands out), `measure` (the
yardstick), `tiling` (levels beyond a tile), `mmd`.

It imports nothing from the rest of `pipeline` (tests/test_layers.py walks the imports): no Ray,
no storage, no job model. Images come in and go out as tensors.
"""
