"""Inner problems: one module per model family (training loss, fast solver,
fixed-point map for the engine)."""
