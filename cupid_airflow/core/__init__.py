"""The algorithms and state of cupid, free of Airflow: one concept a module.

Comparing and finding:

* :mod:`.compare`: what counts as different, and the streaming compare of one partition;
* :mod:`.divergence`: the kinds of divergence (missing, different, gone), one enum for all;
* :mod:`.partitions`: cutting id ranges and update windows into compare tasks, and their shapes;
* :mod:`.claims`: when a claimed range or window counts as checked (failed runs lose nothing);
* :mod:`.positions`: where a pair's scans are (the insert cursor, the update high-water mark);
* :mod:`.watch`: when a watched source changed, and the watcher's marks;
* :mod:`.reconcile`: chunk sizing, mismatch tracking, the segment walk, the minAgeSeconds filter;
* :mod:`.reconcile_progress`: how far a segment's walk got (a retry resumes there).

Reporting:

* :mod:`.confirm`: what replication lost, not what it has in flight: candidates, the destination's
  lag and progress, when a divergence is confirmed;
* :mod:`.events`: the event contract (the callback body) and how events travel between tasks;
* :mod:`.delivery`: the callback delivery loop (concurrency, Retry-After, circuit breaker);
* :mod:`.delivered`: which events earlier tries delivered (a retry sends the rest);
* :mod:`.tally`: what one task did, in numbers; :mod:`.drift`: a run's sums and its note;
* :mod:`.labels`: what a mapped task is called in the UI;
* :mod:`.alerts`: the last failure alert (the same one is not sent again for a while).

Shared:

* :mod:`.codec`: the one codec of every stored value, versions, and the state error;
* :mod:`.errors`: which failures no retry can fix; :mod:`.threads`: the few thread helpers.

They reach databases and receivers only through small protocols (a table, a sender), so they can
be tested and benchmarked without Airflow; :mod:`cupid_airflow.pair` binds them to one sync pair.
"""
