"""Translations between other LLM APIs' wire formats and the gateway's canonical one (OpenAI chat), as pure
functions and small stateful encoders, so that they can be tested on recorded payloads without a server."""
