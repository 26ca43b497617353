"""Distributed neural style transfer (Gatys et al.) on Ray.

Layers, inner to outer: `params`, `vgg`, `losses`, `color`, `lbfgs`, `engine` (the numerical
core: no I/O, no Ray); `images`, `presets`, `demo` (decoding, configuration); `cli` (the only
module that prints).
"""

__version__ = "0.1.0"
