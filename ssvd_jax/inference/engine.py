"""Online sliding-window inference (the paper's Algorithm 2) with a device-resident ring buffer.

Each new frame runs the shared body and the FPNs exactly once; its features and the
aggregation's per-frame work (`SSVD.frame_cache`: the PWC-Net extractor pyramid, the entry half of
the sampling stream's offset predictor) are written into a ring buffer of `buffer_size` slots per
video, so that per (reference, entry) pair only what depends on both frames runs: the PWC-Net
decoders with their cost volumes, the offset predictor's lateral and prediction convs, the
deformable conv. `cached=False` keeps the release's schedule of work instead (the normalised
image is buffered and everything runs per pair): the reference implementation of the caches.
For each reference frame the entries of its support schedule are gathered from the buffer and
aggregated, the heads run, and the release's post-processing + late fusion give detections. One
jit-compiled `step` does both (a push and a detection, each skipped by a mask when there is
nothing to do), with static shapes, for a batch of videos processed in lockstep.
Support schedules: `ssvd_jax.inference.schedules`. Unlike the release, a 1-frame video is
detected too (all entries are that frame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssvd_jax.inference.schedules import (
    RELEASE_OFFSETS,
    buffer_slots_needed,
    schedule_entries,
)
from ssvd_jax.models import outputs as outputs_lib
from ssvd_jax.ops import postprocess

Array = jax.Array


def stream_order(outputs: dict[str, Any]) -> list[str]:
    """Output streams in the order their `stream` ids take (motion 0, sampling 1)."""
    return [s for s in ("single", "motion", "sample", "fused") if s in outputs]


class Video(NamedTuple):
    """One video for `OnlineEngine.run`: its normalised frames [S, S, 3] in order, its length,
    its original frame size (W, H) and a key that comes back with its detections."""

    frames: Iterable[np.ndarray]
    length: int
    size: tuple[int, int]
    key: Any = None


class OnlineEngine:
    """Algorithm 2 for a batch of `num_videos` videos processed in lockstep.

    `model` is an SSVD module (any variant), `variables` its variables. Detections of a step
    come back in input-image pixels (`image_size`); `run` rescales them to each video's frames.
    """

    def __init__(
        self,
        model: Any,
        variables: Any,
        *,
        image_size: int,
        detect_fn: Callable[..., postprocess.Detections],
        schedule: str,
        num_supports: int,
        half_window: int,
        num_videos: int,
        cached: bool,
        per_stream: bool = False,
    ):
        """`detect_fn(list of streams' outputs) -> Detections` is the post-processing with its
        settings bound (`models.outputs.create_detect`). `per_stream`: `run_streams` also
        gives each output stream's own detections (its post-processing alone, no fusion)."""
        self.model = model
        self.per_stream = per_stream
        self.cached = cached
        self.variables = variables
        self.image_size = image_size
        self.schedule = schedule
        self.num_supports = num_supports
        self.half_window = half_window
        self.num_videos = num_videos
        self.num_entries = len(RELEASE_OFFSETS) if schedule == "release" else 1 + num_supports
        self.buffer_size = buffer_slots_needed(schedule, num_supports, half_window)
        self.frames_pushed = 0  # bodies run, summed over videos (the once-per-frame check)
        self._detect = detect_fn
        self._step = jax.jit(self._step_impl, donate_argnums=(1,))

    # ---- device state --------------------------------------------------------------------
    def _frame_work(self, variables: Any, images_NxHxWx3: Array) -> dict[str, Any]:
        """Everything computed once per frame: the body and FPN features and, when cached, the
        aggregation's per-frame caches; else the normalised image (PWC-Net's input)."""
        model = self.model

        def work(m, x):
            feats = m.frame_features(x)
            if not self.cached:
                return {"features": feats, "images": x}
            return {"features": feats, "cache": m.frame_cache(x, feats)}

        return model.apply(variables, images_NxHxWx3, method=work)

    def init_state(self) -> dict[str, Any]:
        """Zeroed ring buffers of `buffer_size` slots per video of everything `_frame_work`
        returns."""
        s = self.image_size
        image = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
        shapes = jax.eval_shape(self._frame_work, self.variables, image)
        lead = (self.num_videos, self.buffer_size)
        return jax.tree.map(lambda a: jnp.zeros((*lead, *a.shape[1:]), a.dtype), shapes)

    def buffer_bytes(self) -> int:
        """Device memory held by the ring buffers."""
        s = self.image_size
        image = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
        shapes = jax.eval_shape(self._frame_work, self.variables, image)
        per_slot = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(shapes))
        return per_slot * self.num_videos * self.buffer_size

    def _step_impl(self, variables, state, new_images, push_slot, do_push, entry_slots, do_detect):
        model = self.model
        videos = jnp.arange(self.num_videos)

        def push(state):
            new = self._frame_work(variables, new_images)

            def write(buffer, value):
                mask = do_push.reshape((-1,) + (1,) * (value.ndim - 1))
                old = buffer[videos, push_slot]
                return buffer.at[videos, push_slot].set(jnp.where(mask, value, old))

            return jax.tree.map(write, state, new)

        state = jax.lax.cond(jnp.any(do_push), push, lambda s: s, state)

        def detect(state):
            entries = jax.tree.map(lambda buffer: buffer[videos[:, None], entry_slots], state)
            reference = jax.tree.map(lambda x: x[:, 0], entries)  # entry 0 is the reference
            if self.cached:
                args = (None, None, reference["features"], entries["features"],
                        reference["cache"], entries["cache"])  # fmt: skip
            else:
                args = (reference["images"], entries["images"], reference["features"],
                        entries["features"])  # fmt: skip
            aggregated = model.apply(variables, *args, method=model.aggregate)
            outputs = model.apply(variables, aggregated, method=model.heads)
            names = stream_order(outputs)
            out = {"fused": self._detect([outputs[name] for name in names])}
            if self.per_stream and len(names) > 1:
                out.update({name: self._detect([outputs[name]]) for name in names})
            return out

        empty = jax.eval_shape(detect, state)
        dets = jax.lax.cond(
            jnp.any(do_detect),
            detect,
            lambda s: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), empty),
            state,
        )
        return state, dets

    def pure_step(self, variables, state, new_images, push_slot, do_push, entry_slots, do_detect):
        """`step`'s computation as a pure function of its arguments, not jitted and donating
        nothing: what `ssvd_jax.export` lowers with `jax.export` (an exported function cannot
        donate its inputs; its caller's jit can)."""
        return self._step_impl(
            variables, state, new_images, push_slot, do_push, entry_slots, do_detect
        )

    def step(self, state, new_images, push_slot, do_push, entry_slots, do_detect):
        """One lockstep step for all videos; returns (state, {'fused': Detections
        [V, max_detections], and with `per_stream` one per output stream})."""
        self.frames_pushed += int(np.sum(do_push))
        return self._step(
            self.variables,
            state,
            jnp.asarray(new_images, jnp.float32),
            jnp.asarray(push_slot, jnp.int32),
            jnp.asarray(do_push, bool),
            jnp.asarray(entry_slots, jnp.int32),
            jnp.asarray(do_detect, bool),
        )

    # ---- host-side driver ----------------------------------------------------------------
    def run(self, videos: Iterable[Video]) -> Iterator[tuple[Any, int, postprocess.Detections]]:
        """Detect every frame of every video, `num_videos` at a time (throughput mode).

        Each engine slot takes the next video as soon as its current one is done, so a long
        video does not hold the other slots idle. Yields (key, frame, detections) as each
        reference frame is done, boxes in original frame pixels (multiplied by W/S and H/S as
        the release's BoxList.resize does).
        """
        for key, t, dets in self.run_streams(videos):
            yield key, t, dets["fused"]

    def run_streams(
        self, videos: Iterable[Video]
    ) -> Iterator[tuple[Any, int, dict[str, postprocess.Detections]]]:
        """`run`, yielding {'fused': the model's detections} and, with `per_stream` on a
        two-stream model, each stream's own ('motion', 'sample') as well."""
        pending = iter(videos)
        s = self.image_size
        slots: list[dict[str, Any] | None] = [None] * self.num_videos

        def take_next(v: int) -> None:
            video = next(pending, None)
            if video is None:
                slots[v] = None
                return
            if video.length < 1:
                raise ValueError(f"video {video.key!r} has no frames")
            w, h = video.size
            slots[v] = dict(
                video=video,
                frames=iter(video.frames),
                entries=schedule_entries(
                    video.length, self.schedule, self.num_supports, self.half_window
                ),
                scale=np.array([w / s, h / s, w / s, h / s], np.float32),
                pushed=0,
                detected=0,
            )

        for v in range(self.num_videos):
            take_next(v)
        state = self.init_state()
        while any(slot is not None for slot in slots):
            new_images = np.zeros((self.num_videos, s, s, 3), np.float32)
            push_slot = np.zeros(self.num_videos, np.int64)
            do_push = np.zeros(self.num_videos, bool)
            entry_slots = np.zeros((self.num_videos, self.num_entries), np.int64)
            do_detect = np.zeros(self.num_videos, bool)
            refs = [-1] * self.num_videos
            for v, slot in enumerate(slots):
                if slot is None:
                    continue
                length = slot["video"].length
                if slot["pushed"] < length:
                    frame = next(slot["frames"], None)
                    if frame is None:
                        raise ValueError(
                            f"video {slot['video'].key!r} ended after {slot['pushed']} of "
                            f"{length} frames"
                        )
                    new_images[v] = frame
                    push_slot[v] = slot["pushed"] % self.buffer_size
                    do_push[v] = True
                    slot["pushed"] += 1
                r = slot["detected"]
                entries = slot["entries"][r]
                # Ready once its last entry is in; its first is still in the ring (the schedule
                # spans at most buffer_size frames and detection keeps pace with the pushes).
                if entries.max() < slot["pushed"]:
                    entry_slots[v] = entries % self.buffer_size
                    do_detect[v] = True
                    refs[v] = r
                    slot["detected"] += 1
            state, dets = self.step(state, new_images, push_slot, do_push, entry_slots, do_detect)
            if not do_detect.any():
                continue
            dets = jax.tree.map(np.asarray, dets)
            for v, slot in enumerate(slots):
                if refs[v] < 0:
                    continue
                one = {}
                for name, d in dets.items():
                    d = jax.tree.map(lambda a, v=v: a[v], d)
                    one[name] = d._replace(boxes=d.boxes * slot["scale"])
                yield slot["video"].key, refs[v], one
                if slot["detected"] == slot["video"].length:
                    take_next(v)


def create_engine(
    config: Any,
    model: Any,
    variables: Any,
    *,
    num_videos: int | None = None,
    per_stream: bool = False,
) -> OnlineEngine:
    """The engine of a config's `eval`, `postprocess`, `data` and `model.anchors` sections.

    A single-frame model aggregates nothing, so its schedule is the reference alone (no lag,
    a one-slot buffer) whatever `eval.schedule` says.
    """
    ev = config.eval
    schedule, supports = ev.schedule, ev.num_supports
    if model.variant == "single_frame":
        schedule, supports = "paper", 0
    return OnlineEngine(
        model,
        variables,
        image_size=config.data.image_size,
        detect_fn=outputs_lib.create_detect(config),
        schedule=schedule,
        num_supports=supports,
        half_window=config.data.support_range,
        num_videos=num_videos or ev.batch_videos,
        cached=ev.cached,
        per_stream=per_stream,
    )
