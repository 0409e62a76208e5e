"""The Gradio web UI: thin wiring over importable, unit-tested handlers."""
