"""Online inference (the paper's Algorithm 2): support schedules and the engine with its
device-resident ring buffer. `from ssvd_jax import inference` gives both modules' names."""

from ssvd_jax.inference.engine import OnlineEngine, Video, create_engine, stream_order
from ssvd_jax.inference.schedules import (
    RELEASE_OFFSETS,
    buffer_slots_needed,
    paper_entries,
    paper_offsets,
    release_entries,
    schedule_entries,
)

__all__ = [
    "RELEASE_OFFSETS",
    "OnlineEngine",
    "Video",
    "buffer_slots_needed",
    "create_engine",
    "paper_entries",
    "paper_offsets",
    "release_entries",
    "schedule_entries",
    "stream_order",
]
