"""Watch rules and alerts: plain-language conditions checked by the model, with a life of their own
(confirmed, held back by a cooldown, cleared), and a snapshot and clip for each alert."""
