"""What a marketing trigger must pass before it reaches a customer.

- ``governance``: consent per channel, daily / weekly caps, quiet hours and the send time (pure functions);
- ``triggers``: the book of held triggers: hold until the send time, send, cancel on an opt-out.
"""
