"""Test support: loopback fake servers (OpenAI, Anthropic, hub, latency) and shared test helpers."""
