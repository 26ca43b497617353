"""The one error type: what is wrong (`field`) and why (`reason`), as attributes.

Every error meant for a user derives from `NSTError`: a parameter, a job-spec field, an image, a
storage object, the cluster. Callers read `field` and `reason`; nobody parses the message. The CLI
catches `NSTError` in one place and prints it; a worker records `reason` in a failed row.
"""

from __future__ import annotations


class NSTError(Exception):
    """`field` names what is wrong: a parameter (`content_weight`), a dotted spec field
    (`resources.gpus_per_actor`), a file or URI, or a thing (`cluster`). `reason` says why, and
    what is allowed where that is known."""

    def __init__(self, field: str, reason: str):
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason

    # Pickled across Ray (and by Ray's own exception wrapper).
    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.field, self.reason)


class ParamError(NSTError, ValueError):
    """A style parameter has a bad value; `field` is the parameter's name."""


class StylizeError(NSTError):
    """A pair could not be stylized (a non-finite loss, an image too small for VGG-19)."""


class WeightsError(NSTError):
    """The requested VGG weights cannot be loaded; `reason` says how to get them."""
