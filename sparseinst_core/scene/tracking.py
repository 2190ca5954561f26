"""Persistent ids for instance masks across frames: a multi-object tracker on masks, time stamps and depth.

Each `update(stamp, observations)` associates the frame's instances with the tracks it keeps:

- Motion: constant velocity, in the image (box centre, pixels per second) and in 3D (centroid, metres per
  second), predicted to the frame's *stamp*: a loop that skips frames (the node's latest-frame-wins loop)
  just sees a longer interval. The predicted mask is the last observed mask moved by the predicted box
  motion. Velocities are smoothed (`velocity_smoothing`) and not updated from an observation whose area
  changed by more than `occlusion_area_ratio`: an object going behind another one, or coming out, moves its
  visible box centre without moving itself.
- Cost of a track-instance pair, the sum of: 1 - IoU (the better of the predicted mask's and the last mask's:
  the object kept its velocity or stopped); `centre_weight` x the distance between the predicted and the
  observed box centre over its gate; `range_weight` x the difference between the predicted and the observed
  centroid's distance from the camera over its gate (when both have one); `age_weight` x the time the track
  went unseen over `track_max_age` (a track seen last frame wins over one lost a while ago);
  `tentative_weight` for a tentative track (an established track wins over one born from a stray
  detection); `score_weight` x (1 - score) (of two duplicates of one object the track keeps the higher
  score, which wins overlaps in the node's label image). The range rather than the 3D distance: it is what
  separates two objects that overlap in the image, while a visible-surface centroid moves sideways when an
  object is partly hidden.
- Gates (a pair outside them never matches): the same class (an object does not change class: a behaviour
  keyed on "track 7 is a person" must not see it become a chair; a detector that flips an instance's class
  for a frame starts a tentative track for that frame, and the old track, kept for `track_max_age`, takes
  the object back when the class flips back); IoU >= `min_iou` or a centre distance within
  `max_centre_distance` + `centre_distance_growth` x time unseen, in object sizes (the square root of the
  track's box area), plus `turn_allowance` x the predicted displacement (an object may turn, even turn
  back); a range difference within `max_range_difference` + `range_difference_growth` x time unseen, metres.
- Matching: global (scipy's linear_sum_assignment) over all tracks, recent and lost, so a returning object
  is matched against a lost track's last appearance and predicted position (re-identification within
  `track_max_age` seconds). Two rounds, as ByteTrack's: instances scoring at least `confident_score` first,
  then the others with the tracks left, so that a stray low-score detection (a fragment left by overlaps)
  cannot pull a track off its object to free it for another track.
- Life cycle: an unmatched instance starts a tentative track, confirmed after `track_min_hits` observations
  (the frame of birth counts). Tentative tracks unseen for `tentative_max_age` seconds are dropped (one
  spurious detection does not keep an id alive), confirmed ones after `track_max_age` seconds.
- Ids: 1..65535 (the node's mono16 label image: pixel value == detection id), handed out in order and reused
  only after wrapping around past 65535, skipping ids still held by a track.

Every instance of a frame gets a distinct, non-zero id, tentative ones included: a tentative instance is
reported with its track's own id (the id it keeps once confirmed), flagged `confirmed=False`. Trade-off:
every published detection can be drawn in the label image and its id never changes at confirmation, but a
false positive burns an id, and consumers that want only stable objects must filter on `confirmed`.

A stamp earlier than the previous one (a replayed bag restarting, simulated time reset) clears the tracks;
ids continue from where they were, so old and new objects are not confused downstream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .masks import InstanceMask, mask_iou

MAX_TRACK_ID = 65535    # ids live in a mono16 label image, 0 being the background
_INFEASIBLE = 1e6


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters; times in seconds. Defaults suit 5-30 Hz and objects moving about their own size
    per second."""

    track_min_hits: int = 3
    track_max_age: float = 1.5
    tentative_max_age: float = 0.5
    min_iou: float = 0.1
    max_centre_distance: float = 0.5          # object sizes
    centre_distance_growth: float = 1.0       # object sizes per second unseen
    turn_allowance: float = 2.0               # x speed x time unseen (2: the object may have turned back)
    max_range_difference: float = 0.3         # metres
    range_difference_growth: float = 0.5      # metres per second unseen
    velocity_smoothing: float = 0.5           # weight of a new velocity measurement
    occlusion_area_ratio: float = 1.5         # area changes beyond this factor do not update velocities
    centre_weight: float = 0.5
    range_weight: float = 0.5
    age_weight: float = 0.2
    tentative_weight: float = 0.5
    score_weight: float = 0.1
    confident_score: float = 0.5              # instances at least this sure are matched first

    def __post_init__(self):
        if self.track_min_hits < 1:
            raise ValueError(f"track_min_hits must be at least 1, got {self.track_min_hits}")
        if self.track_max_age <= 0 or self.tentative_max_age < 0:
            raise ValueError("track_max_age must be positive and tentative_max_age non-negative")
        if not 0 <= self.min_iou <= 1 or not 0 < self.velocity_smoothing <= 1 or self.occlusion_area_ratio < 1:
            raise ValueError("need 0 <= min_iou <= 1, 0 < velocity_smoothing <= 1, occlusion_area_ratio >= 1")


@dataclass(frozen=True)
class Observation:
    """One instance of a frame: class index, score, mask (crop in image pixels) and, with depth, its 3D
    centroid (3,) in metres in the camera optical frame."""

    class_id: int
    score: float
    mask: InstanceMask
    centroid: np.ndarray | None = None


@dataclass(frozen=True)
class TrackIds:
    """The tracker's answer for one frame, in the order of the observations given."""

    ids: np.ndarray         # (N,) int64, distinct, in 1..65535
    confirmed: np.ndarray   # (N,) bool: the track has reached track_min_hits

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Track:
    id: int
    class_id: int
    mask: InstanceMask             # last observed mask
    centre: np.ndarray             # (2,) its box centre, pixels
    velocity: np.ndarray           # (2,) pixels per second
    centroid: np.ndarray | None    # (3,) metres
    velocity_3d: np.ndarray        # (3,) metres per second
    last_seen: float               # stamp, seconds
    area: float                    # smoothed mask area, the reference for occlusion changes
    hits: int = 1
    has_velocity: bool = False


@dataclass(frozen=True)
class _Prediction:
    """A track predicted to a frame's stamp: box centre (pixels), object size (pixels), gates, range (NaN
    without depth), the cost of its age, and the masks to compare (predicted, and the last one if it moved)."""

    centre: tuple[float, float]
    size: float
    centre_gate: float
    range_gate: float
    predicted_range: float
    age_cost: float
    candidates: tuple[InstanceMask, ...]


class MaskTracker:
    """Assigns track ids to each frame's instances; see the module docstring for the method."""

    def __init__(self, config: TrackerConfig = TrackerConfig()):
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_stamp: float | None = None

    @property
    def num_tracks(self) -> int:
        """Tracks kept, tentative and lost ones included."""
        return len(self._tracks)

    def update(self, stamp: float, observations: Sequence[Observation]) -> TrackIds:
        """Associate the observations of the frame taken at `stamp` (seconds) with the tracks."""
        config = self.config
        if self._last_stamp is not None and stamp < self._last_stamp:
            self._tracks = []
        self._last_stamp = stamp
        self._tracks = [track for track in self._tracks
                        if stamp - track.last_seen <= (config.track_max_age if track.hits >= config.track_min_hits
                                                       else config.tentative_max_age)]
        cost = self._cost_matrix(stamp, observations)                              # (T, N)
        ids = np.zeros(len(observations), np.int64)
        confirmed = np.zeros(len(observations), bool)
        confident = np.array([obs.score >= config.confident_score for obs in observations], bool)
        all_tracks = np.arange(len(self._tracks))
        first = _assignment(cost, all_tracks, np.flatnonzero(confident))
        left = np.setdiff1d(all_tracks, [track_index for track_index, _ in first])
        second = _assignment(cost, left, np.flatnonzero(~confident))
        for track_index, obs_index in first + second:
            track = self._tracks[track_index]
            self._observe(track, stamp, observations[obs_index])
            ids[obs_index], confirmed[obs_index] = track.id, track.hits >= config.track_min_hits
        for obs_index in np.flatnonzero(ids == 0):
            track = self._new_track(stamp, observations[obs_index])
            ids[obs_index], confirmed[obs_index] = track.id, track.hits >= config.track_min_hits
        return TrackIds(ids, confirmed)

    def _cost_matrix(self, stamp: float, observations: Sequence[Observation]) -> np.ndarray:
        """(T, N) cost of each track-observation pair, _INFEASIBLE outside the gates.

        Everything but the mask IoU is computed for all pairs at once; the IoU only for pairs of one class
        whose boxes overlap (the others have none), with each track's predicted mask made once per frame.
        """
        config = self.config
        cost = np.full((len(self._tracks), len(observations)), _INFEASIBLE)
        if not self._tracks or not observations:
            return cost
        boxes = np.array([obs.mask.box for obs in observations], np.int64).reshape(-1, 4)   # (N, 4)
        centres = np.stack([boxes[:, 0] + (boxes[:, 2] - boxes[:, 0] - 1) / 2.0,
                            boxes[:, 1] + (boxes[:, 3] - boxes[:, 1] - 1) / 2.0], axis=1)  # (N, 2), as centre()
        ranges = np.array([np.nan if obs.centroid is None else math.hypot(*obs.centroid) for obs in observations])
        scores = np.array([obs.score for obs in observations], np.float64)
        same_class = (np.array([track.class_id for track in self._tracks])[:, None]
                      == np.array([obs.class_id for obs in observations])[None, :])          # (T, N)
        motion = [self._predicted(track, stamp) for track in self._tracks]
        predicted_centres = np.array([m.centre for m in motion])                           # (T, 2)
        sizes, centre_gates, range_gates, predicted_ranges, age_costs = (
            np.array([getattr(m, name) for m in motion], np.float64)
            for name in ("size", "centre_gate", "range_gate", "predicted_range", "age_cost"))
        offsets = centres[None, :, :] - predicted_centres[:, None, :]                      # (T, N, 2)
        centre_distance = np.hypot(offsets[..., 0], offsets[..., 1]) / sizes[:, None]      # (T, N) object sizes
        iou = np.zeros(cost.shape)
        for track_index, obs_index in zip(*np.nonzero(same_class & self._any_box_overlaps(motion, boxes))):
            obs_mask = observations[obs_index].mask
            iou[track_index, obs_index] = max((mask_iou(mask, obs_mask) for mask in motion[track_index].candidates
                                               if _boxes_overlap(mask.box, obs_mask.box)), default=0.0)
        feasible = same_class & ~((iou < config.min_iou) & (centre_distance > centre_gates[:, None]))
        pair_cost = 1.0 - iou + config.centre_weight * np.minimum(centre_distance / centre_gates[:, None], 1.0)
        range_difference = np.abs(ranges[None, :] - predicted_ranges[:, None])             # NaN without depth
        with_range = ~np.isnan(range_difference)
        feasible &= ~(with_range & (range_difference > range_gates[:, None]))
        pair_cost = np.where(with_range, pair_cost + config.range_weight * range_difference / range_gates[:, None],
                             pair_cost)
        total = pair_cost + age_costs[:, None] + config.score_weight * (1.0 - scores[None, :])
        cost[feasible] = total[feasible]
        return cost

    def _predicted(self, track: _Track, stamp: float) -> "_Prediction":
        """Where `track` should be at `stamp`, and its gates there."""
        config = self.config
        unseen = stamp - track.last_seen
        shift_x, shift_y = (track.velocity * unseen).tolist()
        moved = round(shift_x) != 0 or round(shift_y) != 0
        predicted_mask = track.mask.shifted(round(shift_x), round(shift_y))
        size = max(math.sqrt(track.mask.mask.size), 1.0)                      # sqrt of the box's area
        age_cost = config.age_weight * min(unseen / config.track_max_age, 1.0)
        if track.hits < config.track_min_hits:
            age_cost += config.tentative_weight
        return _Prediction(
            centre=(track.centre[0] + shift_x, track.centre[1] + shift_y), size=size,
            centre_gate=(config.max_centre_distance + config.centre_distance_growth * unseen
                         + config.turn_allowance * math.hypot(shift_x, shift_y) / size),   # object sizes
            range_gate=config.max_range_difference + config.range_difference_growth * unseen,
            predicted_range=(np.nan if track.centroid is None
                             else math.hypot(*(track.centroid + track.velocity_3d * unseen))),
            age_cost=age_cost,
            candidates=(predicted_mask, track.mask) if moved else (predicted_mask,))   # moved, or stopped

    @staticmethod
    def _any_box_overlaps(motion: list["_Prediction"], boxes: np.ndarray) -> np.ndarray:
        """(T, N): whether an observation's box (N, 4) overlaps a box of the track's candidate masks."""
        overlaps = np.zeros((len(motion), len(boxes)), bool)
        for index in range(max(len(m.candidates) for m in motion)):
            candidate = np.array([m.candidates[min(index, len(m.candidates) - 1)].box for m in motion])   # (T, 4)
            overlaps |= ((candidate[:, None, 0] < boxes[None, :, 2]) & (boxes[None, :, 0] < candidate[:, None, 2])
                         & (candidate[:, None, 1] < boxes[None, :, 3]) & (boxes[None, :, 1] < candidate[:, None, 3]))
        return overlaps

    def _observe(self, track: _Track, stamp: float, obs: Observation) -> None:
        """Update a matched track with its new observation."""
        config = self.config
        interval = stamp - track.last_seen
        centre = obs.mask.centre()
        area = float(obs.mask.area)
        steady = 1.0 / config.occlusion_area_ratio <= area / max(track.area, 1.0) <= config.occlusion_area_ratio
        if interval > 0 and steady:
            weight = config.velocity_smoothing if track.has_velocity else 1.0
            track.velocity = track.velocity + weight * ((centre - track.centre) / interval - track.velocity)
            if obs.centroid is not None and track.centroid is not None:
                measured = (np.asarray(obs.centroid, np.float64) - track.centroid) / interval
                track.velocity_3d = track.velocity_3d + weight * (measured - track.velocity_3d)
            track.has_velocity = True
        track.area += config.velocity_smoothing * (area - track.area)
        track.mask, track.centre, track.last_seen = obs.mask, centre, stamp
        if obs.centroid is not None:
            track.centroid = np.asarray(obs.centroid, np.float64)
        track.hits += 1

    def _new_track(self, stamp: float, obs: Observation) -> _Track:
        track = _Track(id=self._allocate_id(), class_id=obs.class_id, mask=obs.mask, centre=obs.mask.centre(),
                       velocity=np.zeros(2), velocity_3d=np.zeros(3), last_seen=stamp, area=float(obs.mask.area),
                       centroid=None if obs.centroid is None else np.asarray(obs.centroid, np.float64))
        self._tracks.append(track)
        return track

    def _allocate_id(self) -> int:
        """The next id in 1..65535 order that no kept track holds (wrapping around past 65535)."""
        taken = {track.id for track in self._tracks}
        for _ in range(MAX_TRACK_ID):
            candidate = self._next_id
            self._next_id = candidate % MAX_TRACK_ID + 1
            if candidate not in taken:
                return candidate
        raise RuntimeError(f"all {MAX_TRACK_ID} track ids are held by tracks")


def _assignment(cost: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> list[tuple[int, int]]:
    """The (track, observation) pairs of the cheapest global assignment between `rows` and `columns` of a
    (T, N) cost matrix, pairs outside the gates left out."""
    if len(rows) == 0 or len(columns) == 0:
        return []
    pairs = cost[np.ix_(rows, columns)]                                            # (R, C)
    return [(int(rows[row]), int(columns[column])) for row, column in zip(*linear_sum_assignment(pairs))
            if pairs[row, column] < _INFEASIBLE]


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (x0, y0, x1, y1) boxes (x1, y1 exclusive) share a pixel: masks in them can overlap."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
