"""OpenAI, every OpenAI-compatible server (vLLM, Ollama, Groq, Together...) and Azure OpenAI: the gateway's canonical
format is theirs, so the request is forwarded as it came (its bytes, when no filter changed it)."""
