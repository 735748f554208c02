"""A customer's live state and what is derived from it.

- ``state``: the profile (sparse, JSON-ready) and how each event type changes it;
- ``segments``: RFM segments with thresholds that adapt to the shop's own data;
- ``timers``: event-time timers in hour buckets, lazily loaded and cancelled;
- ``views``: the profile as the outside sees it (replay output, ``crm-stream profile``).
"""
