"""Flows generated column-wise as Arrow tables in the store's insert shape.

Ten million event dicts would take minutes and gigabytes to build; numpy and
Arrow compute build the same columns in seconds. The shape follows
``benchmarks._events``: ten events per flow (flow_started with three labels,
four steps started and ended, flow_ended), one flow in twenty failing on its
last step with an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks._events import _STACK, ENVS, FAIL_EVERY, FLOW_NAMES, REGIONS, SOURCES, STEPS

EVENTS_PER_FLOW = 2 + 2 * len(STEPS)
# Position of each event within its flow, and what it is.
_KINDS = ["flow_started"] + ["step_started", "step_ended"] * len(STEPS) + ["flow_ended"]
_STEP_OF = [-1] + [s for s in range(len(STEPS)) for _ in (0, 1)] + [-1]
_LAST_STEP_END = EVENTS_PER_FLOW - 2


@dataclass
class Chunk:
    table: pa.Table
    flow_ids: list[str]
    tenants: np.ndarray  # tenant index per flow


def _dict_strings(values: list[str], index: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(index))


def _maps(counts: np.ndarray, keys: pa.Array, items: pa.Array) -> pa.MapArray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.MapArray.from_arrays(pa.array(offsets), keys, items)


def chunk(
    first: int, n_flows: int, n_tenants: int, end_ms: int, span_ms: int, total_flows: int, seed: int
) -> Chunk:
    """Flows ``first`` .. ``first + n_flows - 1`` of ``total_flows`` spread over ``span_ms`` before ``end_ms``."""
    from dashfrog.storage._arrow import ARROW_SCHEMA

    rng = np.random.default_rng(seed + first)
    idx = np.arange(first, first + n_flows, dtype=np.int64)
    start_ms = end_ms - span_ms + idx * span_ms // max(total_flows, 1)
    rand_hi = rng.integers(0, 2**40, n_flows, dtype=np.int64)
    rand_lo = rng.integers(0, 2**40, n_flows, dtype=np.int64)
    flow_ids = [
        f"{ms:012x}{hi:010x}{lo:010x}"
        for ms, hi, lo in zip(start_ms.tolist(), rand_hi.tolist(), rand_lo.tolist(), strict=True)
    ]
    tenant_idx = rng.integers(0, n_tenants, n_flows)
    name_idx = rng.integers(0, len(FLOW_NAMES), n_flows)
    failed = (idx % FAIL_EVERY) == FAIL_EVERY - 1

    per = EVENTS_PER_FLOW
    n = n_flows * per
    flow_of = np.repeat(np.arange(n_flows), per)
    pos = np.tile(np.arange(per), n_flows)
    kind_idx = np.tile(np.arange(per), n_flows)
    step_of = np.tile(np.array(_STEP_OF), n_flows)
    is_step = step_of >= 0
    is_end = np.isin(pos, [i for i, k in enumerate(_KINDS) if k.endswith("_ended")])
    failed_ev = failed[flow_of]
    # The failing step's end and the flow's end carry the error, as the SDK sends them.
    has_error = failed_ev & ((pos == _LAST_STEP_END) | (pos == per - 1))

    # Timestamps: each event some milliseconds after the previous one.
    gaps = rng.integers(1_000, 50_000, (n_flows, per)).astype(np.int64)
    gaps[:, 0] = 0
    ts = ((start_ms * 1000)[:, None] + np.cumsum(gaps, axis=1)).ravel()

    flow_id_col = pa.array(flow_ids, pa.string()).take(pa.array(flow_of))
    event_id = pc.binary_join_element_wise(flow_id_col, pc.cast(pa.array(pos), pa.string()), "-")
    step_num = (idx[flow_of] * len(STEPS) + np.maximum(step_of, 0)).astype(np.int64)
    step_id = pc.if_else(
        pa.array(is_step),
        pc.utf8_lpad(pc.cast(pa.array(step_num), pa.string()), 16, "0"),
        pa.scalar("", pa.string()),
    )
    status = np.where(is_end, np.where(has_error, 1, 0), 2)
    empty = pa.array([""] * n, pa.string()) if n else pa.array([], pa.string())

    # Labels on flow_started: env, region, source.
    starts = pos == 0
    label_counts = np.where(starts, 3, 0)
    label_keys = pa.array(
        np.tile(np.array(["env", "region", "source"], dtype=object), n_flows), pa.string()
    )
    label_vals = np.empty(n_flows * 3, dtype=object)
    label_vals[0::3] = np.array(ENVS, dtype=object)[idx % len(ENVS)]
    label_vals[1::3] = np.array(REGIONS, dtype=object)[(idx // 3) % len(REGIONS)]
    label_vals[2::3] = np.array(SOURCES, dtype=object)[(idx // 7) % len(SOURCES)]
    labels = _maps(label_counts, label_keys, pa.array(label_vals, pa.string()))
    # Attributes on step_started: rows.
    step_starts = is_step & ~is_end
    attr_counts = np.where(step_starts, 1, 0)
    n_attr = int(attr_counts.sum())
    attr_vals = pc.cast(pa.array(100 + idx[flow_of][step_starts] % 900), pa.string())
    attributes = _maps(attr_counts, pa.array(["rows"] * n_attr, pa.string()), attr_vals)

    columns = {
        "event_id": event_id,
        "kind": _dict_strings(_KINDS, kind_idx),
        "flow_id": flow_id_col,
        "tenant": _dict_strings([f"tenant-{t:04d}" for t in range(n_tenants)], tenant_idx[flow_of]),
        "flow_name": _dict_strings(list(FLOW_NAMES), name_idx[flow_of]),
        "step_id": step_id,
        "parent_step_id": empty,
        "step_name": _dict_strings([*STEPS, ""], np.where(is_step, step_of, len(STEPS))),
        "status": _dict_strings(["success", "failed", ""], status),
        "has_error": pa.array(has_error.astype(np.uint8)),
        "error_type": _dict_strings(["", "ValueError"], has_error.astype(np.int64)),
        "error_message": _dict_strings(["", "Invalid data format"], has_error.astype(np.int64)),
        "error_stack": _dict_strings(["", _STACK], has_error.astype(np.int64)),
        "labels": labels,
        "attributes": attributes,
        "timestamp": pa.array(ts, pa.int64()).view(pa.timestamp("us", tz="UTC")),
        "service": _dict_strings(["bench-service"], np.zeros(n, dtype=np.int64)),
        "host": _dict_strings(["bench-host"], np.zeros(n, dtype=np.int64)),
        "trace_id": empty,
        "span_id": empty,
        "sdk_version": _dict_strings(["bench"], np.zeros(n, dtype=np.int64)),
        "event_name": empty,
    }
    table = pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)
    return Chunk(table, flow_ids, tenant_idx)
