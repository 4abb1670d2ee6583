"""The algorithms of cupid, free of Airflow: each in the module named for it.

* :mod:`.state`: every persisted or exchanged state shape (cursor, high-water mark, partitions,
  events, reconcile progress, delivered ids), typed and versioned, with one value codec;
* :mod:`.partitions`: cutting id ranges and update windows into compare tasks;
* :mod:`.compare`: what counts as different, and the streaming compare of one partition;
* :mod:`.reconcile`: checksum formula, chunk sizing, mismatch tracking and the segment walk;
* :mod:`.delivery`: the callback delivery loop (concurrency, Retry-After, circuit breaker);
* :mod:`.threads`: the few thread helpers the above share;
* :mod:`.errors`: which failures no retry can fix.

They reach databases and receivers only through small protocols (a table, a sender), so they can
be tested and benchmarked without Airflow; :mod:`cupid_airflow.pair` binds them to one sync pair.
"""
