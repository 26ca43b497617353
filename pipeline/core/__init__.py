"""Floor 1, the math: the Gatys optimization on tensors, with no I/O.

`params` (StyleParams: every default and choice), `sizes`, `errors` (NSTError), `version`,
`network`, `taps` and `weights` (VGG-19), `warm` (the warm network and its speed settings),
`losses`, `color`, `masks` and `guides` (spatial control), `lbfgs`, `device` (device, precision,
how many pairs are stacked, CUDA graphs), `targets` (what a level optimizes toward), `optimize`
(the objective and the loop, read top to bottom), `stream` (continuous batching through a stack's
slots), `records` (what the loop hands out), `measure` (the yardstick), `engine` (`Stylizer`: the
entry points and their checks), `dispatch` (pairs of any sizes into stacks or streams), `tiling`
(levels beyond a tile), `mmd`.

It imports nothing from the rest of `pipeline` (tests/test_layers.py walks the imports): no Ray,
no storage, no job model. Images come in and go out as tensors.
"""
