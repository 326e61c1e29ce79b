"""A tiny project for lazyslurm's wheel packaging tests: not installed anywhere; its one
dependency (attrs) is not on the test cluster either."""

import attrs

__version__ = "0.1.0"


@attrs.frozen
class Shout:
    text: str

    def loud(self) -> str:
        return self.text.upper() + "!"


def shout(text: str) -> str:
    return Shout(text).loud()
