"""Online models and how they are judged; framework-free, and never imports ``crm_stream.operators``.

- ``features``: pure feature functions of a profile at an event time;
- ``rhythm``: the built-in estimates from a customer's own purchase gaps (also the baseline);
- ``churn``, ``next_purchase``: River pipelines learned online from delayed labels;
- ``components``: small River parts the pipelines need;
- ``labels``: delayed labels with censoring; ``evaluation``: progressive (test-then-train) validation;
- ``hub``: the models, labels, metrics and snapshots in one object;
- ``anger``: the anger score of support messages (lexicon rule and learned model).
"""
