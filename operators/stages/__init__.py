"""The steps a batch goes through, framework-free (``flows/dataflow.py`` wires them into Bytewax).

- ``identity``: anonymous visitors become customers, with their buffered history;
- ``shard``: one shard's batch loop: apply events, run rules, fire timers, emit effects;
- ``working_set``: the customers a shard holds between batches, in front of the store of record;
- ``learning``: the process's online models, shared by its shards, and their snapshots;
- ``evaluate``: the same pipeline run on a file without Bytewax, scoring the models (``crm-stream evaluate``);
- ``gc_pacing``: the one garbage-collection policy of the engine, replay and evaluation.
"""
