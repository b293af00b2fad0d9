"""Judges: the request/answer protocol of gpt-oss-safeguard on vLLM's OpenAI API (pure), token budgets,
confidence from logprobs, multi-policy prompts, and the HTTP client (aiohttp) with retries, per-
endpoint circuit breakers and least-in-flight balancing."""
