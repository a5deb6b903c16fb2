"""Anthropic's wire format, both ways.

Upstream (a deployment served by Anthropic): provider.py makes the call, translate.py turns the OpenAI chat request
into a Messages request and the whole answer back, stream.py turns Anthropic's stream events into OpenAI chunks.
Ingress (POST /v1/messages, for Anthropic's SDKs): ingress/ turns the Messages request into the canonical OpenAI
chat request, and what the pipeline answers back into a Message or Anthropic's stream events.
"""
