"""Calendar time of a synthetic database and the time-varying rate of each event process.

Times are float days since `start` while generating (vectorised arithmetic), whole seconds as
`timestamp[us]` when written. An event process's modulation (trend, weekly, yearly and daily cycles,
bursts) is tabulated hourly; its running integral turns uniform draws into event times exactly
(inverse-transform sampling of a piecewise-constant rate), with no rejection step.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from graph_engine.synthetic.config import ProcessConfig
from graph_engine.synthetic.randomness import rng_for

US_PER_SECOND = 1_000_000
SECONDS_PER_DAY = 86_400
YEAR_DAYS = 365.25


class Timeline:
    """Maps float days since `start` to calendar features and to microsecond timestamps."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.end = end
        self.span_days = (end - start).total_seconds() / SECONDS_PER_DAY
        midnight = datetime(start.year, start.month, start.day)
        self._day_offset = (start - midnight).total_seconds() / SECONDS_PER_DAY
        self._weekday0 = midnight.weekday()
        self._doy0 = float(midnight.timetuple().tm_yday - 1)
        self._start_s = int((start - datetime(1970, 1, 1)).total_seconds())

    def to_us(self, days: np.ndarray) -> np.ndarray:
        """Whole-second epoch microseconds (int64) for float days since start."""
        secs = np.floor(np.asarray(days, dtype=np.float64) * SECONDS_PER_DAY).astype(np.int64)
        return (secs + self._start_s) * US_PER_SECOND

    def days_of(self, when: datetime) -> float:
        return (when - self.start).total_seconds() / SECONDS_PER_DAY

    def calendar(self, days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(day of week 0=Mon as float, day of year as float, hour of day) for float days."""
        abs_days = np.asarray(days, dtype=np.float64) + self._day_offset
        whole = np.floor(abs_days)
        dow = (whole + self._weekday0) % 7 + (abs_days - whole)
        doy = (abs_days + self._doy0) % YEAR_DAYS
        hour = (abs_days - whole) * 24.0
        return dow, doy, hour

    def season(self, days: np.ndarray) -> np.ndarray:
        """The `season` latent source: [cos(day of year), sin(day of year), weekend]."""
        dow, doy, _ = self.calendar(days)
        ang = 2 * np.pi * doy / YEAR_DAYS
        return np.stack([np.cos(ang), np.sin(ang), (dow >= 5).astype(np.float64)], axis=1)

    def month(self, days: np.ndarray) -> np.ndarray:
        """Calendar month (1..12) of float days; only used on small arrays (occasion schedules)."""
        return np.array(
            [(self.start + timedelta(days=float(d))).month for d in np.asarray(days)], dtype=np.int64
        )


class IntensityGrid:
    """Hourly tabulated rate modulation m(t) of one process (mean 1 over the span) and its integral."""

    def __init__(self, timeline: Timeline, proc: ProcessConfig, seed: int, table: str) -> None:
        span = timeline.span_days
        n_bins = max(1, int(np.ceil(span * 24)))
        edges = np.minimum(np.arange(n_bins + 1, dtype=np.float64) / 24.0, span)
        edges[-1] = span
        centers = 0.5 * (edges[:-1] + edges[1:])
        widths = np.diff(edges)
        dow, doy, hour = timeline.calendar(centers)
        m = np.exp(proc.trend * (centers / max(span, 1e-9) - 0.5))
        m *= 1 + proc.weekly_amplitude * np.cos(2 * np.pi * (dow - proc.weekly_peak_day) / 7)
        m *= 1 + proc.yearly_amplitude * np.cos(2 * np.pi * (doy - proc.yearly_peak_day) / YEAR_DAYS)
        m *= 1 + proc.daily_amplitude * np.cos(2 * np.pi * (hour - proc.daily_peak_hour) / 24)
        if proc.bursts > 0:
            rng = rng_for(seed, "bursts", table)
            where = rng.uniform(0, span, proc.bursts)
            amp = proc.burst_amplitude * rng.uniform(0.5, 1.5, proc.bursts)
            for c, a in zip(where, amp, strict=True):
                near = np.abs(centers - c) < 6 * proc.burst_days
                m[near] += a * np.exp(-0.5 * ((centers[near] - c) / proc.burst_days) ** 2)
        m /= float(np.sum(m * widths)) / span
        self.edges = edges
        self.cum = np.concatenate([[0.0], np.cumsum(m * widths)])

    def cum_at(self, days: np.ndarray) -> np.ndarray:
        """Integrated modulation from the start to `days` (in days at mean rate)."""
        return np.asarray(np.interp(days, self.edges, self.cum), dtype=np.float64)

    def inverse(self, cum: np.ndarray) -> np.ndarray:
        return np.asarray(np.interp(cum, self.cum, self.edges), dtype=np.float64)
