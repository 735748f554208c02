"""Settings: ``settings`` is the one settings module; ``default.toml`` and ``production.toml`` are examples."""
