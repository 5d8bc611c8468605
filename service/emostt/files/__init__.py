"""Whole audio files (the OpenAI-compatible REST endpoint): decode, segment with the streaming
path's VAD and endpointer, transcribe the segments on the shared batcher, aggregate."""
