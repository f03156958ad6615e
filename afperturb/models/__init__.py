"""Model backends: OpenAI-compatible, Anthropic, completions, simulated and replay."""
