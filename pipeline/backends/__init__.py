"""Model backends: each streams text for (frames, prompt); see ``base`` for the protocol and registry."""
