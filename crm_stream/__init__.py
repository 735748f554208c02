"""crm-stream: live customer profiles, alerts and marketing triggers from a stream of customer events.

The installed package is this one namespace; its parts are the repository's top-level folders
(``crm_stream/operators`` and the others here are links to them):

- ``crm_stream.flows``: the Bytewax wiring, the CLI and the agents' console (the only code that imports Bytewax);
- ``crm_stream.operators``: the framework-free logic of the engine, in packages by concept;
- ``crm_stream.models``: the online models, their features, labels and evaluation (never imports ``operators``);
- ``crm_stream.config``: the one settings module and the example TOML files;
- ``crm_stream.errors``: the root exception every expected failure derives from.
"""

__version__ = "0.2.0"
