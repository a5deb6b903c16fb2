"""POST /v1/responses: OpenAI's Responses API in, the canonical OpenAI chat request out (request.py, items.py),
and the chat answer back as a Response object, whole (answer.py) or as Responses stream events (stream.py). Pure
functions and a small stateful encoder, so that they can be tested on recorded payloads without a server.

Ids: the response is `resp_<request_id>`, its message item `msg_<request_id>`, its function calls
`fc_<request_id>_<n>` (n: the call's position in the answer); an input item sent without an id gets
`in_<request_id>_<n>` (n: its position in this turn's input). request_id is the gateway's record id.
"""
