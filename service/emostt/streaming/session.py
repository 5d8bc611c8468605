"""One streaming session: audio in, speech_started / partial / final / emotion_changed / error out.

Runs on the event loop. Audio and control messages are handled strictly in arrival order by
one consumer (``handle``); VAD runs on the VAD thread and the model on the batcher's workers.
Finals are sent in utterance order even when batches finish out of order; a partial that
arrives after its utterance's final is dropped and counted. Each final carries the session's
mood (streaming/mood.py), updated in utterance order; an ``emotion_changed`` it causes is sent
right after it: no utterance's event comes between them (``_emit`` sends them together).

Speculative finals: once the trailing silence an utterance keeps has passed, its final audio
is fixed unless speech resumes, so the final is decoded while the endpointer still waits for
the rest of ``silence_duration_ms``. At the endpoint that result is sent at once; if speech
resumed, it is discarded (counted) and the utterance goes on.

For OpenAI Realtime (transport/openai_realtime.py) a session can also: end turns only when told
(``set_manual_turns``: every frame belongs to the open turn, and the VAD only decides when a
partial is worth asking for), drop the open turn unheard (``discard``), and announce each
endpoint with a ``speech_ended`` event (``endpoint_events``) before the final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

from emostt.batching.service import BatchService
from emostt.errors import EmosttError, InvalidConfigError
from emostt.inference.engine import TranscriptionRequest
from emostt.observability import metrics
from emostt.policy.outcome import Failed, Outcome, Served
from emostt.streaming import events
from emostt.streaming.final_delivery import send_final
from emostt.streaming.framing import Framer
from emostt.streaming.mood import MoodTracker
from emostt.streaming.partials import deliver_partial
from emostt.streaming.protocol import Audio, Command, Configure, Control
from emostt.streaming.segmenter import Segmenter, SpeechEnded, SpeechStarted
from emostt.streaming.turn_taking import SemanticTurns, effective, endpointing, no_turn_model
from emostt.streaming.turns import TurnBatcher
from emostt.streaming.utterance import SessionStats, Speculation, Utterance, transcription_request
from emostt.streaming.vad import VadBatcher, VadFailedError, VadStream
from emostt.vocabulary import VAD_FRAME_MS
from emostt.vocabulary.session_config import EndpointConfig, SessionConfig

log = logging.getLogger(__name__)

Emit = Callable[[events.Event], Awaitable[None]]
MIN_PARTIAL_MS = 320


class Session:
    def __init__(
        self,
        session_id: str,
        batcher: BatchService,
        vad: VadBatcher,
        emit: Emit,
        config: SessionConfig,
        speculative_finals: bool = True,
        endpoint_events: bool = False,
        turns: TurnBatcher | None = None,
    ) -> None:
        self.session_id = session_id
        self._speculative_finals = speculative_finals
        self._endpoint_events = endpoint_events
        self._manual = False
        self._manual_silence = 0  # frames since the VAD last heard speech, in manual turns
        self.config = effective(config, turns is not None)
        # Said once the session has started (``start``): semantic turns asked of a server without a model.
        self._notices = [] if self.config == config else [no_turn_model()]
        self._batcher = batcher
        self._send = emit
        self._emit_lock = asyncio.Lock()
        self._mood = MoodTracker(config.mood)
        self._vad = vad
        self._vad_stream = VadStream()
        self._segmenter = Segmenter(endpointing(self.config))
        self._semantic = None
        if turns is not None:
            self._semantic = SemanticTurns(turns, self._segmenter, self._emit, self._endpoint, self._spawn)
        self._framer = Framer(config.sample_rate, config.encoding)
        self._audio_received = False
        self._history: deque[tuple[int, npt.NDArray[np.float32]]] = deque(maxlen=self._history_frames())
        self._utterance: Utterance | None = None
        self._last_final: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Utterances that have started and not yet ended in a final or an error, in order.
        self._unfinished: dict[str, Utterance] = {}
        self._failing = False
        self.stats = SessionStats()

    async def start(self) -> None:
        """Sent after ``ready``: what the session could not serve as asked (and serves otherwise)."""
        notices, self._notices = self._notices, []
        for notice in notices:
            await self._emit(notice)

    def _history_frames(self) -> int:
        return self._segmenter.config.frames(self.config.vad.prefix_padding_ms) + 2

    # -- commands ----------------------------------------------------------------------------

    async def handle(self, command: Command) -> None:
        if isinstance(command, Audio):
            await self._on_audio(command.pcm, command.received_at)
        elif isinstance(command, Configure):
            updated = self.config.updated(command.changes)
            audio_format = (updated.sample_rate, updated.encoding)
            if audio_format != (self.config.sample_rate, self.config.encoding):
                if self._audio_received:
                    raise InvalidConfigError(
                        "sample_rate and encoding can only be set before the first audio"
                    )
                self._framer.set_format(*audio_format)
            self.config = effective(updated, self._semantic is not None)
            self._segmenter.reconfigure(self._endpointing())
            self._mood.reconfigure(self.config.mood)
            self._history = deque(self._history, maxlen=self._history_frames())
            await self._emit(events.config_changed(self.config.model_dump()))
            if self.config != updated:
                await self._emit(no_turn_model())
        elif isinstance(command, Control) and command.kind == "finalize":
            await self._finalize_now()

    async def flush(self) -> None:
        """End the current utterance and wait until every final has been sent."""
        await self._finalize_now()
        if self._last_final is not None:
            await self._last_final

    async def _finalize_now(self) -> None:
        for event in self._segmenter.finalize():
            assert isinstance(event, SpeechEnded)
            await self._endpoint(event)

    @property
    def open_utterance(self) -> str | None:
        """The id of the utterance in progress (started, not yet ended), if any."""
        return self._utterance.utterance_id if self._utterance is not None else None

    @property
    def audio_ms(self) -> int:
        """The session's audio clock: milliseconds of audio analysed so far."""
        return self._segmenter.frame * VAD_FRAME_MS

    @property
    def manual_turns(self) -> bool:
        return self._manual

    def set_manual_turns(self, manual: bool) -> None:
        """Manual turns: an utterance ends only by ``finalize`` (or at ``max_utterance_ms``) and
        holds all the audio since the previous one ended, speech or not (OpenAI Realtime's
        ``turn_detection: null``). An utterance open when this changes goes on under the new rule."""
        if manual != self._manual:
            self._manual = manual
            self._manual_silence = 0
            self._segmenter.reconfigure(self._endpointing())

    def _endpointing(self) -> EndpointConfig:
        # Manual turns start at the first frame after the previous one ends: no onset to confirm.
        vad = endpointing(self.config)
        return vad.model_copy(update={"min_speech_ms": 0}) if self._manual else vad

    def discard(self) -> str | None:
        """Drop the open utterance with no result (OpenAI Realtime's ``input_audio_buffer.clear``):
        its audio is forgotten and its pending partial and speculative final cancelled. The next
        utterance cannot reach back into it. Returns the dropped utterance's id."""
        utt = self._utterance
        self._segmenter.finalize()  # the endpointer forgets the turn too
        if utt is None:
            return None
        self._utterance = None
        utt.ended = True
        utt.drop_partial()
        utt.discard_speculation()
        self._unfinished.pop(utt.utterance_id, None)
        metrics.UTTERANCES.labels("discarded").inc()
        return utt.utterance_id

    def abort(self) -> None:
        """The client is gone: drop in-flight work, counting finals that can no longer be delivered."""
        if self._utterance is not None:
            self._utterance.discard_speculation()
            self._utterance = None
        for task in self._tasks:
            task.cancel()
        if not self._failing:  # fail_unfinished reports these as errors instead
            metrics.UTTERANCES.labels("client_gone").inc(len(self._unfinished))
            self._unfinished.clear()

    async def fail_unfinished(self, code: str, message: str) -> None:
        """The session must end before its results are ready (forced shutdown, internal error):
        every utterance that started and has no final yet gets an error naming it."""
        self._failing = True
        self.abort()
        for utterance_id in list(self._unfinished):
            await self._send_error(utterance_id, code, message, retryable=True)
        self._unfinished.clear()

    @property
    def unfinished(self) -> int:
        return len(self._unfinished)

    async def _emit(self, *batch: events.Event) -> None:
        """Send events; those given together leave together (a final and its emotion_changed)."""
        async with self._emit_lock:
            for event in batch:
                await self._send(event)

    # -- audio -------------------------------------------------------------------------------

    async def _on_audio(self, pcm: bytes, received_at: float) -> None:
        self._audio_received = True
        frames = self._framer.push(pcm)
        if len(frames) == 0:
            return
        try:
            probs = await self._vad.speech_probs(self._vad_stream, frames)
        except VadFailedError as exc:
            # This chunk was not analysed: say so, give the open utterance its final from the
            # audio so far, and start the next chunk from a fresh VAD state.
            self._vad_stream = VadStream()
            await self._finalize_now()
            metrics.ERRORS.labels(exc.code).inc()
            self.stats.errors += 1
            await self._emit(events.error(exc.code, str(exc), exc.retryable))
            return
        speech_frames = 0
        for frame, prob in zip(frames, probs, strict=True):
            index = self._segmenter.frame
            self._history.append((index, frame))
            if self._utterance is not None:
                self._utterance.frames.append((index, frame))
                speech_frames += 1
            if self._manual:
                # The VAD still tells speech from silence (partials wait for speech); the turn
                # itself takes every frame until the client ends it.
                heard = prob >= self._segmenter.config.negative_threshold
                self._manual_silence = 0 if heard else self._manual_silence + 1
                prob = 1.0
            for event in self._segmenter.push(prob):
                if isinstance(event, SpeechStarted):
                    await self._start_utterance(event)
                else:
                    await self._endpoint(event)
            if self._utterance is not None and self._trailing_silence() == 0:
                self._utterance.speech_end_at = received_at  # a speech frame, by the endpointer's rule
            turn = self.config.turn_detection
            if self._semantic and self._utterance and turn.type == "semantic" and not self._manual:
                await self._semantic.on_frame(self._utterance, turn)
        if speech_frames:  # what this session asks of the model: admission control measures it
            self._batcher.record_speech(speech_frames * VAD_FRAME_MS / 1000)
        self._maybe_partial()
        self._maybe_speculate()

    async def _start_utterance(self, event: SpeechStarted) -> None:
        self.stats.utterances += 1
        utterance = Utterance(f"u{self.stats.utterances}", event.start_frame)
        utterance.frames = [(i, f) for i, f in self._history if i >= event.start_frame]
        self._utterance = utterance
        self._unfinished[utterance.utterance_id] = utterance
        await self._emit(events.speech_started(utterance.utterance_id, event.start_frame * VAD_FRAME_MS))

    def _request(self, audio: npt.NDArray[np.float32]) -> TranscriptionRequest:
        return transcription_request(self.config, audio)

    def _submit_final(self, audio: npt.NDArray[np.float32]) -> asyncio.Task[Outcome]:
        return asyncio.ensure_future(
            self._batcher.submit(self._request(audio), is_final=True, session_id=self.session_id)
        )

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- partials ----------------------------------------------------------------------------

    def _maybe_partial(self) -> None:
        utt = self._utterance
        cfg = self.config
        if utt is None or not cfg.interim_results or utt.partial_in_flight:
            return
        # Frames up to the last speech frame: a partial over a pause would repeat the last one,
        # and re-decoding trailing silence just before the final is wasted compute.
        spoken = len(utt.frames) - self._trailing_silence()
        interval_ms = cfg.partial_interval_ms * self._batcher.partial_interval_scale
        if (
            spoken * VAD_FRAME_MS < MIN_PARTIAL_MS
            or (spoken - utt.partial_frames) * VAD_FRAME_MS < interval_ms
        ):
            return
        utt.partial_frames = spoken
        utt.partial_in_flight = True
        end_frame = utt.start_frame + spoken
        request = self._request(utt.audio(end_frame))
        self._spawn(deliver_partial(self._batcher, request, self.session_id, utt, end_frame, self._emit))

    # -- finals ------------------------------------------------------------------------------

    def _maybe_speculate(self) -> None:
        utt = self._utterance
        if utt is None or not self._speculative_finals:
            return
        end_frame = self._segmenter.predicted_end()
        if utt.speculation is not None and utt.speculation.end_frame != end_frame:
            utt.discard_speculation()  # speech resumed
        if end_frame is not None and utt.speculation is None:
            utt.speculation = Speculation(end_frame, self._submit_final(utt.audio(end_frame)))
            utt.drop_partial()

    def _trailing_silence(self) -> int:
        """Silent frames at the end of the open utterance (manual turns: by the VAD's ear)."""
        if self._manual:
            return min(self._manual_silence, len(self._utterance.frames) if self._utterance else 0)
        return self._segmenter.trailing_silence_frames

    async def _endpoint(self, event: SpeechEnded) -> None:
        utterance_id = self.open_utterance
        self._end_utterance(event)
        if self._endpoint_events and utterance_id is not None:
            # Emitted before the final's task can send: the final always follows it.
            await self._emit(
                events.speech_ended(utterance_id, event.end_frame * VAD_FRAME_MS, event.reason.value)
            )

    def _end_utterance(self, event: SpeechEnded) -> None:
        utt = self._utterance
        if utt is None:
            return
        self._utterance = None
        utt.ended = True
        if self._semantic is not None:
            utt.end_of_turn_confidence = self._semantic.forget(utt)
        utt.drop_partial()
        if utt.speculation is not None and utt.speculation.end_frame == event.end_frame:
            outcome = utt.speculation.outcome
            metrics.SPECULATIVE_FINALS.labels("used").inc()
        else:
            utt.discard_speculation()
            outcome = self._submit_final(utt.audio(event.end_frame))
        previous = self._last_final
        self._last_final = self._spawn(
            self._deliver_final(
                utt, outcome, event.end_frame, event.reason.value, time.perf_counter(), previous
            )
        )

    async def _deliver_final(
        self,
        utt: Utterance,
        pending: asyncio.Task[Outcome],
        end_frame: int,
        reason: str,
        endpoint_at: float,
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            try:
                outcome: Outcome = await pending
            except EmosttError as exc:
                outcome = Failed(exc.code, str(exc), exc.retryable)
            if previous is not None:
                await asyncio.shield(previous)  # finals leave in utterance order
            if isinstance(outcome, Served):
                await send_final(
                    self._emit,
                    self.stats,
                    self.config,
                    self._mood,
                    utt,
                    outcome,
                    end_frame,
                    reason,
                    endpoint_at,
                )
            else:
                await self._send_error(utt.utterance_id, outcome.code, outcome.message, outcome.retryable)
            self._unfinished.pop(utt.utterance_id, None)
        except asyncio.CancelledError:
            # abort() or fail_unfinished() cancelled it; they count the utterance.
            raise

    async def _send_error(self, utterance_id: str, code: str, message: str, retryable: bool) -> None:
        metrics.UTTERANCES.labels("error").inc()
        metrics.ERRORS.labels(code).inc()
        self.stats.errors += 1
        await self._emit(events.error(code, message, retryable, utterance_id))
