"""How the bot understands: FAQ catalog, normaliser, fuzzy matcher, cascade. Knows nothing of the engine."""
