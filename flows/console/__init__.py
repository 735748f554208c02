"""The agents' web console: live service alerts, the customer beside them, claims and feedback.

- ``app``: the Starlette app (pages, SSE feed, API) and ``serve``;
- ``backends``: where alerts, profiles and feedback come from (Kafka + Redis, or the embedded demo);
- ``feed``: the ring of recent alerts and the feedback records it sends;
- ``profiles``: a customer's profile as the console shows it; ``claims``: "I am calling this customer";
- ``auth``: password hashes and signed session tokens; ``page.html``: the single page.
"""
