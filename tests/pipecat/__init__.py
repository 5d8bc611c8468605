"""The Pipecat STT service (clients/pipecat) in real Pipecat pipelines against a real server."""
