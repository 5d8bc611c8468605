"""Semantic turns for one session: at a pause, ask the turn model whether the user's turn is over.

With ``turn_detection.type == "semantic"`` the segmenter's silence endpoint is moved out to the
eagerness's ``max_silence_ms``; this module decides earlier ends. When an open utterance has been
silent for ``min_pause_ms`` (and again every ``RECHECK_MS`` of further silence), the turn's last
8 s go to the turn model (``TurnBatcher``, batched across sessions in its own thread):

- P(complete) >= threshold: the turn ends in this pause (``Segmenter.end_turn``: the same end
  frame as the silence endpoint would have had, so the final decoded speculatively during the
  pause is the one sent at once);
- eager_threshold <= P < threshold: ``eager_end_of_turn`` with the speculative final's text (an
  agent may start its answer), and ``turn_resumed`` if speech comes back;
- otherwise nothing: the utterance stays open across the pause.

A model that fails or is busy costs nothing but the early end: the silence endpoint still ends
the turn. Event-loop only. An utterance has at most one question out, and the next recheck counts
from its answer, so a loaded turn model is asked less often rather than queued deeper. A question
still waiting when speech resumes or the utterance ends is withdrawn from the model's queue; an
answer that arrives after either is dropped (checked by the utterance and the pause it was asked
about).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt.policy.outcome import Served
from emostt.streaming import events
from emostt.streaming.segmenter import Segmenter, SpeechEnded
from emostt.streaming.turns import TurnBatcher, TurnFailedError
from emostt.streaming.utterance import Utterance
from emostt.vocabulary.session_config import EndpointConfig, SessionConfig, TurnDetection

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

# While a pause goes on and the model has not agreed, it is asked again this often: trailing
# silence is part of what it hears, and a turn that ended often looks more complete later.
RECHECK_MS = 400


@dataclass
class TurnState:
    """The semantic-turn bookkeeping of the open utterance."""

    asked_pause: int | None = None  # the frame its current pause began at, once asked about it
    asked_at_silence: int = 0  # trailing silence (frames) at the last question
    eager_sent: bool = False
    confidence: float | None = None  # the model's latest P(complete) for this utterance
    asking: bool = False  # a question is out (waiting for the model, or acting on its answer)
    request: asyncio.Future[float] | None = None  # its model request while that is waiting

    def withdraw(self) -> None:
        """Nobody will read the waiting model request's answer: take it out of the queue."""
        if self.request is not None:
            self.request.cancel()


def effective(config: SessionConfig, model_available: bool) -> SessionConfig:
    """``config`` as it can be served: semantic turns need the turn model."""
    if config.turn_detection.type == "semantic" and not model_available:
        return config.model_copy(update={"turn_detection": TurnDetection()})
    return config


def endpointing(config: SessionConfig) -> EndpointConfig:
    """The segmenter's settings: with semantic turns, silence alone ends a turn only at the
    eagerness's longest wait."""
    turn = config.turn_detection
    if turn.type != "semantic":
        return config.vad
    return config.vad.model_copy(update={"silence_duration_ms": turn.effective().max_silence_ms})


class SemanticTurns:
    def __init__(
        self,
        turns: TurnBatcher,
        segmenter: Segmenter,
        emit: Callable[[events.Event], Awaitable[None]],
        end_turn: Callable[[SpeechEnded], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self._turns = turns
        self._spawn = spawn
        self._segmenter = segmenter
        self._emit = emit
        self._end_turn = end_turn
        self._states: dict[str, TurnState] = {}

    def state(self, utt: Utterance) -> TurnState:
        return self._states.setdefault(utt.utterance_id, TurnState())

    def forget(self, utt: Utterance) -> float | None:
        """The utterance ended: its last confidence (for its final), and its state dropped."""
        state = self._states.pop(utt.utterance_id, None)
        if state is None:
            return None
        state.withdraw()
        return state.confidence

    async def on_frame(self, utt: Utterance, turn: TurnDetection) -> None:
        """After each frame of an open utterance: a resumed turn is announced; a pause long
        enough gets a question (run as a task of the session's)."""
        state = self.state(utt)
        silence = self._segmenter.trailing_silence_frames
        if silence == 0:
            state.asked_pause = None
            state.withdraw()
            if state.eager_sent:
                state.eager_sent = False
                await self._emit(events.turn_resumed(utt.utterance_id))
            return
        if state.asking:
            return
        first = self._segmenter.config.frames(turn.min_pause_ms)
        again = self._segmenter.config.frames(RECHECK_MS)
        pause = self._segmenter.frame - silence
        due = silence == first or (state.asked_pause == pause and silence - state.asked_at_silence >= again)
        if silence < first or not due:
            return
        state.asked_pause, state.asked_at_silence = pause, silence
        state.asking = True
        # The pause so far is part of what the model hears (as Pipecat's analyzer does).
        self._spawn(self._ask(utt, state, turn, pause, utt.audio()))

    async def _ask(
        self, utt: Utterance, state: TurnState, turn: TurnDetection, pause: int, audio: FloatArray
    ) -> None:
        try:
            await self._question(utt, state, turn, pause, audio)
        finally:
            state.asking = False

    async def _question(
        self, utt: Utterance, state: TurnState, turn: TurnDetection, pause: int, audio: FloatArray
    ) -> None:
        request = state.request = asyncio.ensure_future(self._turns.probability(audio))
        try:
            confidence = await request
        except TurnFailedError as exc:
            log.debug("turn model unavailable for a pause: %s", exc)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if request.cancelled() and task is not None and not task.cancelling():
                return  # withdrawn: speech resumed or the utterance ended
            raise
        finally:
            state.request = None
        if not self._still_in(utt, state, pause):
            return
        # The next recheck counts from this answer: a slow model is asked less often.
        state.asked_at_silence = self._segmenter.trailing_silence_frames
        state.confidence = confidence
        limits = turn.effective()
        if confidence >= limits.threshold:
            for event in self._segmenter.end_turn():
                assert isinstance(event, SpeechEnded)
                await self._end_turn(event)  # the session's endpoint: utt is still its open one
        elif confidence >= limits.eager_threshold and not state.eager_sent:
            text = await _speculative_text(utt)
            if text is not None and self._still_in(utt, state, pause):
                state.eager_sent = True
                await self._emit(events.eager_end_of_turn(utt.utterance_id, text, confidence))

    def _still_in(self, utt: Utterance, state: TurnState, pause: int) -> bool:
        """``utt`` is still open and in the pause the question was about."""
        seg = self._segmenter
        return (
            not utt.ended
            and state.asked_pause == pause
            and seg.trailing_silence_frames > 0
            and seg.frame - seg.trailing_silence_frames == pause
        )


async def _speculative_text(utt: Utterance) -> str | None:
    """The text of the final being decoded during this pause, once it is ready."""
    speculation = utt.speculation
    if speculation is None:
        return None
    try:
        outcome = await asyncio.shield(speculation.outcome)
    except asyncio.CancelledError:
        if speculation.outcome.cancelled():  # discarded: speech resumed
            return None
        raise  # this question itself was cancelled (the session ended)
    except Exception:  # the speculative decode failed; the final will say so
        return None
    return outcome.result.text if isinstance(outcome, Served) else None


def no_turn_model() -> events.Event:
    """The error a session gets when it asks for semantic turns of a server without a turn model."""
    return events.error(
        "turn_model_unavailable",
        "this server has no turn model: the session's turns end by silence (turn_detection silence)",
        retryable=False,
    )
