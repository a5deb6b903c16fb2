"""POST /v1/messages: Anthropic's Messages API in, the canonical OpenAI chat request out (request.py), and the
answer back in Anthropic's format, whole (answer.py) or streamed (stream.py). Pure functions and small stateful
encoders, so that they can be tested on recorded payloads without a server."""
