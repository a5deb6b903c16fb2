"""The upstream side: one package per provider on a base that owns the HTTP call.

base.py      the Provider protocol, the registry of provider types, HTTPProvider (the send skeleton that every
             HTTP provider fills in with small hooks), translated_stream (the reading of a stream in another
             API's events), UnsupportedRequest and the mapping of transport errors
sse.py       server-sent events: the one decoder every provider's stream uses, and framing for the client
openai/      OpenAI and every OpenAI-compatible server, Azure OpenAI
anthropic/   Anthropic's Messages API: the request and answer translations, its stream, its errors, and the
             ingress that serves POST /v1/messages to Anthropic's SDKs
gemini/      Google's Gemini API (Google AI and Vertex AI): chat, stream, embeddings, errors
mock.py      the built-in deterministic upstream for demos, tests and benchmarks
"""
