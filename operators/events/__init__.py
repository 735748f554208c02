"""Events on the way in: the schema and decoder, event time, routing, and the simulated shop.

- ``schema``: every contract event type, validated and normalised; bad records become dead letters with a reason;
- ``timeutil``: the contract's two time formats <-> integer epoch milliseconds (UTC);
- ``router``: decode a raw batch and group the good events by identity shard;
- ``simulator``: a simulated shop (contract events plus the truth behind them) for the demo and tests.
"""
