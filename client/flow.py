"""``flow``: start, end and annotate customer-scoped workflows.

>>> from dashfrog import flow
>>> with flow.start(name="data_import", tenant="acme-corp", env="prod") as flow_id:
...     ...
"""

from dashfrog._flow import (
    current_flow_id as current_id,
)
from dashfrog._flow import (
    current_tenant,
)
from dashfrog._flow import (
    end_flow as end,
)
from dashfrog._flow import (
    fail_flow as fail,
)
from dashfrog._flow import (
    flow_event as event,
)
from dashfrog._flow import (
    start_flow as start,
)
from dashfrog._flow import (
    succeed_flow as succeed,
)

__all__ = ["current_id", "current_tenant", "end", "event", "fail", "start", "succeed"]
