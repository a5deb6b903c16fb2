"""Google's Gemini API (Google AI and Vertex AI) behind the OpenAI format: provider.py makes the calls; translate.py
(with schema.py) turns chat requests and whole answers both ways, stream.py the stream's events, embeddings.py
embeddings, errors.py Google's errors."""
