"""Settings are split by environment: base (everything, env-driven), production, test."""
