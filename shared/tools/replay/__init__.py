"""Record, export, replay and diff topic traffic; inspect and redrive dead letters.

One module per job, all speaking the JSON Lines record format of :mod:`.records`:

* :mod:`.bounds` — ``ID|TIME`` range bounds for XRANGE;
* :mod:`.export` — a stream's entries to JSON Lines, page by page (bounded memory);
* :mod:`.capture` — live traffic of several topics (XREAD, no consumer group);
* :mod:`.replay` — republish recorded requests, collect their results;
* :mod:`.diff` — pair two sets of results by request and say what changed;
* :mod:`.dlq` — list, show and redrive dead letters (fleet's and daprd's alike).

Nothing here runs functions or joins a consumer group, so none of it takes work from workers.
The CLI (``fleet topic …``, ``fleet dlq …``) is a thin shell over these modules.
"""
