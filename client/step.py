"""``step``: logical operations inside the current flow.

>>> from dashfrog import step
>>> with step.start("validate", rows=120):
...     ...
"""

from dashfrog._flow import start_step as start

__all__ = ["start"]
