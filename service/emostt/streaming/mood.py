"""The session's mood: its per-utterance emotion smoothed over recent finals, with a sticky label.

Pure and deterministic. Time is the session's audio clock (seconds of audio since the session
opened, from each final's ``audio_end_ms``), never the wall clock, so a stream gives the same
moods however fast it is sent. One tracker per session; not thread-safe: only the session's
final delivery, which runs in utterance order on the event loop, calls ``update``.

The algorithm (docs/protocol.md, "Mood", says why):

* Evidence. Each counted final adds ``weight × scores`` to a per-label evidence table, where
  ``weight = confidence × min(duration_s, MAX_WEIGHT_S)``: a confident two-second sentence
  counts more than a mumbled "uh". ``unknown`` (the model could not tell) is not a mood: its
  mass is left out, so a final that is 90 % ``unknown`` adds a tenth of its weight.
* Decay. Before adding, the evidence so far is multiplied by ``0.5 ** (Δt / half_life_s)``,
  ``Δt`` the audio time since the previous counted final: a finding a half-life old counts half.
* Distribution. ``scores = normalised(prior + evidence)``, the prior being ``PRIOR_WEIGHT`` on
  ``neutral`` that never decays: the mood starts neutral, always sums to 1, and relaxes back to
  neutral over a long pause.
* Label (hysteresis). The mood's label starts ``neutral`` and changes only when another label
  is the distribution's top and leads the current label by at least ``min_margin`` on
  ``min_updates`` consecutive counted finals; then one ``EmotionChange`` is reported. With the
  default 2, one utterance alone never changes the mood, however strongly it is scored.

Counted finals are those with evidence: not gated (``observe``), with some weight and some
known emotion. The others carry the mood unchanged and do not count towards a change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from emostt.inference.engine import TranscriptionResult
from emostt.vocabulary.labels import MOOD_LABELS
from emostt.vocabulary.session_config import MoodConfig

BASELINE = "neutral"
# The prior: as if the session had begun with this much (confidence × seconds) neutral speech that
# never fades. Small against a few utterances, so it mostly decides the start and long pauses.
PRIOR_WEIGHT = 1.0
# One final counts at most this many seconds of speech: a long monologue is one finding, not ten.
MAX_WEIGHT_S = 5.0


@dataclass(frozen=True)
class Mood:
    """The smoothed distribution over ``MOOD_LABELS`` and the mood's (sticky) label.

    ``label`` is not always the argmax of ``scores``: it lags on purpose (hysteresis).
    """

    label: str
    scores: dict[str, float]


@dataclass(frozen=True)
class EmotionChange:
    from_label: str
    to_label: str
    scores: dict[str, float]  # the smoothed distribution that made the change


@dataclass(frozen=True)
class MoodUpdate:
    mood: Mood
    changed: EmotionChange | None = None


class MoodTracker:
    def __init__(self, config: MoodConfig | None = None) -> None:
        self.config = config or MoodConfig()
        self._reset()

    def _reset(self) -> None:
        self._evidence = dict.fromkeys(MOOD_LABELS, 0.0)
        self._last_at: float | None = None
        self._label = BASELINE
        self._candidate: str | None = None
        self._streak = 0
        self._mood = Mood(BASELINE, self._distribution())

    @property
    def mood(self) -> Mood:
        """The mood as of the last counted final (neutral before the first)."""
        return self._mood

    def reconfigure(self, config: MoodConfig) -> None:
        """New settings apply from the next update; turning the mood off forgets it."""
        self.config = config
        if not config.enabled:
            self._reset()

    def observe(self, result: TranscriptionResult, gated: bool, audio_end_ms: int) -> MoodUpdate:
        """A final as the session sends it. A gated final (no speech, a non-speech event, below the
        client's thresholds) is not evidence of the speaker's state: it carries the mood unchanged."""
        if gated:
            return MoodUpdate(self._mood)
        duration_s, at_s = result.duration_ms / 1000, audio_end_ms / 1000
        return self.update(result.emotion.scores, result.confidence, duration_s, at_s)

    def update(
        self, scores: Mapping[str, float], confidence: float, duration_s: float, at_s: float
    ) -> MoodUpdate:
        """Count one final's emotion ``scores`` (any labels; ``unknown`` and others are left out).

        A final with no evidence (zero weight, or nothing but ``unknown``) counts like a gated one:
        it neither moves the mood nor confirms a change. (Decay needs no update: it is applied for
        the whole time since the last counted final when the next one comes.)"""
        weight = _unit(confidence) * min(max(_finite(duration_s), 0.0), MAX_WEIGHT_S)
        total = sum(max(_finite(v), 0.0) for v in scores.values())
        added = {
            label: weight * max(_finite(scores.get(label, 0.0)), 0.0) / total if total > 0 else 0.0
            for label in MOOD_LABELS
        }
        if not any(added.values()):
            return MoodUpdate(self._mood)
        if self._last_at is not None:
            decay = 0.5 ** (max(at_s - self._last_at, 0.0) / self.config.half_life_s)
            for label in MOOD_LABELS:
                self._evidence[label] *= decay
        self._last_at = at_s if self._last_at is None else max(at_s, self._last_at)
        for label, mass in added.items():
            self._evidence[label] += mass
        distribution = self._distribution()
        changed = self._follow(distribution)
        self._mood = Mood(self._label, distribution)
        return MoodUpdate(self._mood, changed)

    def _distribution(self) -> dict[str, float]:
        masses = {label: self._evidence[label] for label in MOOD_LABELS}
        masses[BASELINE] += PRIOR_WEIGHT
        total = sum(masses.values())
        return {label: mass / total for label, mass in masses.items()}

    def _follow(self, distribution: dict[str, float]) -> EmotionChange | None:
        """Hysteresis: move the label only after a clear lead held over ``min_updates`` finals."""
        current = self._label
        # Ties go to the current label, then to the first label in MOOD_LABELS.
        leader = max(MOOD_LABELS, key=lambda label: (distribution[label], label == current))
        if leader == current or distribution[leader] - distribution[current] < self.config.min_margin:
            self._candidate, self._streak = None, 0
            return None
        self._streak = self._streak + 1 if leader == self._candidate else 1
        self._candidate = leader
        if self._streak < self.config.min_updates:
            return None
        self._label, self._candidate, self._streak = leader, None, 0
        return EmotionChange(current, leader, distribution)


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _unit(value: float) -> float:
    return min(max(_finite(value), 0.0), 1.0)
