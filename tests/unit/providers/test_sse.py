from gateway.providers.sse import SSEDecoder, frame


def test_events_split_across_chunks_are_reassembled():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":') == []
    assert decoder.feed(b'1}\n\ndata: {"b":2}\n') == [b'{"a":1}']
    assert decoder.feed(b"\ndata: [DONE]\n\n") == [b'{"b":2}', b"[DONE]"]


def test_crlf_comments_event_names_and_multiline_data():
    decoder = SSEDecoder()
    stream = b': keep-alive\r\n\r\nevent: error\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata:no-space\r\n\r\n'
    assert decoder.feed(stream) == [b'{"x":\n1}', b"no-space"]


def test_a_last_event_without_blank_line_is_flushed():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: tail") == []
    assert decoder.flush() == [b"tail"]


def test_frame():
    assert frame(b"{}") == b"data: {}\n\n"


def test_bare_json_events_are_payloads_only_when_asked():
    stream = b'data: {"a":1}\n\n: keep-alive\n\n{\n  "error": {"code": 500}\n}\n\n[{"error": {}}]'
    assert SSEDecoder().feed(stream) == [b'{"a":1}']
    decoder = SSEDecoder(bare_json=True)
    assert decoder.feed(stream) == [b'{"a":1}', b'{\n  "error": {"code": 500}\n}']
    assert decoder.flush() == [b'[{"error": {}}]']
