"""A voice agent that hears how the user sounds: emostt's mood goes into the LLM's context.

    export EMOSTT_URL=ws://localhost:8000 EMOSTT_TOKEN=...   # the emostt server
    export LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... OPENAI_API_KEY=...
    python -m livekit.agents start clients/livekit/examples/emotion_agent.py

`stt_node` watches the finals go by and keeps the speaker's mood (emostt's smoothed emotion);
`on_user_turn_completed` adds it to the turn's context right before the LLM answers. emostt's
START_OF_SPEECH / END_OF_SPEECH drive the turns, so no VAD plugin is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, ModelSettings, llm, stt
from livekit.plugins import emostt, openai
from livekit.rtc import AudioFrame


class EmotionAwareAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a friendly voice assistant. Keep your answers short.")
        self.mood: emostt.EmotionContext | None = None

    async def stt_node(  # an async generator: one of the forms the framework takes
        self, audio: AsyncIterable[AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent]:
        async for event in Agent.default.stt_node(self, audio, model_settings):
            if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT and event.alternatives:
                self.mood = emostt.EmotionContext.from_metadata(event.alternatives[0].metadata) or self.mood
            yield event

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        if self.mood is not None:
            turn_ctx.add_message(role="system", content=self.mood.to_instructions())


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session: AgentSession[None] = AgentSession(
        stt=emostt.STT(),  # EMOSTT_URL, EMOSTT_TOKEN
        llm=openai.LLM(model="gpt-4o-mini"),
        tts=openai.TTS(),
        turn_handling={"turn_detection": "stt"},
    )
    await session.start(agent=EmotionAwareAgent(), room=ctx.room)  # joins the room too
