"""Ctrl-C while a model trains stops it at the end of the current batch; elsewhere, or pressed twice, at once.

Raised at an arbitrary point, the KeyboardInterrupt can land in a weakref callback of TensorFlow's, where Python
prints and drops it and the search runs on; raised from a Keras callback (training.ctrl_c_callback) it always
stops the run. search.py installs the handler before it knows the backend, so this module imports no Keras.

One concern: the interrupt. It imports the standard library only.
"""

from __future__ import annotations

import sys
from typing import Any


class CtrlC:
    """The SIGINT handler and what it remembers: whether a model is training and whether Ctrl-C was pressed."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.training = self.pressed = False

    def handle(self, signum: int, frame: Any) -> None:
        at_once = self.pressed or not self.training
        self.pressed = True  # remembered, so that training stops even if this exception is dropped
        if at_once:
            raise KeyboardInterrupt

    def unraisable(self, unraisable: Any) -> None:
        """sys.unraisablehook: a dropped Ctrl-C is not news, the next batch raises it again; the rest is printed."""
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            sys.__unraisablehook__(unraisable)


CTRL_C = CtrlC()
